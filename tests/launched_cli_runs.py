"""Run several ``finetune-kit`` commands one after the other in each process of one
``accelerate launch`` (see tests/launched.py).

    python launched_cli_runs.py RUNS.json LOG_DIR

RUNS.json lists ``{"name": ..., "args": [...]}``. What a process prints during a run, at the level
of its file descriptors (so also what libraries print), goes to LOG_DIR/NAME.RANK.log, and the
command's exit status to LOG_DIR/NAME.RANK.exit; a failing run does not stop the next one.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def run_captured(app, args: list[str], log: Path) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "w") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            code = app(args, prog_name="finetune-kit", standalone_mode=False)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
    return code if isinstance(code, int) else 0 if code is None else 1


def main() -> None:
    runs = json.loads(Path(sys.argv[1]).read_text())
    logs = Path(sys.argv[2])
    rank = int(os.environ.get("RANK", "0"))
    from finetune_kit.cli import app

    for run in runs:
        code = run_captured(app, run["args"], logs / f"{run['name']}.{rank}.log")
        (logs / f"{run['name']}.{rank}.exit").write_text(str(code))


if __name__ == "__main__":
    main()
