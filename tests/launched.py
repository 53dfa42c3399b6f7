"""Trainings under ``accelerate launch`` with two CPU processes (examples/accelerate/cpu_2proc.yaml).

A test module plans a training with ``@two_process_run(name)``: a function that writes the run's
data into the directory it is given and returns the ``finetune-kit train`` arguments. Every run
planned in the session then trains in one launch (``launched_cli_runs.py`` runs them one after
the other in the same two processes), because starting the processes and importing the stack
costs more than training a tiny model; the ``two_process_runs`` fixture hands each test its run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CPU_CONFIG = REPO / "examples" / "accelerate" / "cpu_2proc.yaml"
RUNNER = Path(__file__).resolve().parent / "launched_cli_runs.py"
PROCESSES = 2

# run name -> plan(directory, tiny encoder) -> the train command's arguments
PLANNED: dict[str, Callable[[Path, str], list[str]]] = {}


def launch(arguments: list[str], env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``accelerate launch --config_file cpu_2proc.yaml ARGUMENTS`` and check that it succeeded."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", **(env or {})}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG), *arguments]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def two_process_run(name: str) -> Callable:
    """Register ``plan`` as the two-process training ``name``."""
    def register(plan: Callable[[Path, str], list[str]]) -> Callable[[Path, str], list[str]]:
        assert name not in PLANNED, f"two runs are called {name}"
        PLANNED[name] = plan
        return plan
    return register


@dataclass
class LaunchedRun:
    out: Path  # its --output
    validation: Path  # its --validation
    printed: str  # what both processes printed during this run, standard output and error
    exit_codes: list[int]  # one per process

    def check(self) -> LaunchedRun:
        assert self.exit_codes == [0] * PROCESSES, self.printed[-3000:]
        return self


@pytest.fixture(scope="session")
def two_process_runs(tiny_encoder: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, LaunchedRun]:
    root = tmp_path_factory.mktemp("two-processes")
    runs, planned = [], {}
    for name, plan in sorted(PLANNED.items()):
        directory = root / name
        directory.mkdir()
        arguments = plan(directory, tiny_encoder)
        runs.append({"name": name, "args": ["train", *arguments]})
        planned[name] = tuple(Path(arguments[arguments.index(option) + 1]) for option in ("--output", "--validation"))
    plan_file = root / "runs.json"
    plan_file.write_text(json.dumps(runs))
    logs = root / "logs"
    logs.mkdir()
    launch([str(RUNNER), str(plan_file), str(logs)], timeout=120 + 60 * len(runs))

    def outcome(name: str) -> LaunchedRun:
        printed = "".join((logs / f"{name}.{rank}.log").read_text() for rank in range(PROCESSES))
        codes = [int((logs / f"{name}.{rank}.exit").read_text()) for rank in range(PROCESSES)]
        return LaunchedRun(*planned[name], printed, codes)

    return {name: outcome(name) for name in planned}
