"""Mixed-precision training (``--mixed-precision``): bf16 runs the matrix products in bf16 under
Accelerate's autocast while the weights, their gradients and the AdamW state stay fp32; ``no``
runs them in fp32; ``auto`` picks bf16 where the hardware multiplies bf16 natively (CPU flags
amx_bf16 / avx512_bf16, a GPU with native bf16), else no, and the run records what it picked.

bf16 autocast works on every CPU (emulated where the CPU lacks bf16 instructions, only slower),
so the dtype checks run everywhere."""

import json
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.profiler import ProfilerActivity, profile
from typer.testing import CliRunner

import finetune_kit as fk
import finetune_kit.accelerator
import finetune_kit.api
import finetune_kit.precision
from finetune_kit.cli import app
from finetune_kit.config import ConfigError, load_config
from finetune_kit.precision import agreed_mixed_precision, auto_mixed_precision, cpuinfo_flags, native_bf16_cpu_flags
from tests.conftest import NEGATIVE, POSITIVE, write_csv

CPU = torch.device("cpu")
# The matrix products of the Linear layers: addmm in the forward pass (they have biases), mm in
# the backward one.
LINEAR_MATMULS = ("aten::addmm", "aten::mm")
# Every matrix product: also attention's, which in training (attention dropout on) runs in
# finetune-kit's attention with dropout (finetune_kit/dropout.py): in bf16 under bf16 autocast.
MATMULS = (*LINEAR_MATMULS, "aten::bmm", "aten::baddbmm", "aten::matmul")
# What the profiler lists among an op's input types for its arguments that are no tensors.
NOT_TENSORS = {"", "Scalar", "ScalarList"}


def cpuinfo(*flag_lines: str) -> str:
    """/proc/cpuinfo text of one x86 processor per flags line."""
    return "".join(f"processor\t: {i}\nvendor_id\t: GenuineIntel\nflags\t\t: {flags}\n\n"
                   for i, flags in enumerate(flag_lines))


SAPPHIRE_RAPIDS = cpuinfo("fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8")
ZEN4 = cpuinfo("fpu sse2 avx2 avx512f avx512bw avx512_vnni avx512_bf16")
SKYLAKE = cpuinfo("fpu sse2 avx2 avx512f avx512bw avx512vl avx512_vnni")  # AVX-512, no BF16
GRAVITON3 = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n"


@pytest.mark.parametrize(("text", "capabilities", "expected"), [
    (SAPPHIRE_RAPIDS, None, ("bf16", "the CPU has amx_bf16 and avx512_bf16")),
    (cpuinfo("fpu avx2 amx_bf16 amx_tile"), None, ("bf16", "the CPU has amx_bf16")),
    (ZEN4, None, ("bf16", "the CPU has avx512_bf16")),
    (SKYLAKE, {"avx512_bf16": True}, ("no", "the CPU has neither AMX nor AVX-512 BF16")),  # cpuinfo decides
    (cpuinfo("fpu avx512_bf16", "fpu avx2"), None, ("no", "the CPU has neither AMX nor AVX-512 BF16")),  # every core
    # no x86 flags in the text (ARM's Features, a system without /proc/cpuinfo): torch's detection
    (GRAVITON3, {"architecture": "aarch64", "bf16": True, "sve": True}, ("no", "the CPU has neither AMX nor "
                                                                               "AVX-512 BF16")),
    ("", {"architecture": "x86_64", "avx512_bf16": True, "amx_bf16": False}, ("bf16", "the CPU has avx512_bf16")),
    ("", {"architecture": "arm64"}, ("no", "the CPU has neither AMX nor AVX-512 BF16")),  # Apple silicon
])
def test_auto_picks_bf16_on_cpus_with_amx_or_avx512_bf16(text, capabilities, expected):
    assert auto_mixed_precision(CPU, cpuinfo=text, capabilities=capabilities) == expected


def test_the_cpuinfo_flags_are_those_of_every_processor():
    assert cpuinfo_flags(cpuinfo("a b c", "b c d")) == {"b", "c"}
    assert cpuinfo_flags(GRAVITON3) is None
    assert cpuinfo_flags("") is None


def test_this_host_is_detected_without_error():
    """On the machine the tests run on: whatever it has, the answer is one of the two."""
    value, why = auto_mixed_precision(CPU)
    assert value in ("bf16", "no") and why
    assert (value == "bf16") == bool(native_bf16_cpu_flags())


def test_auto_on_a_gpu_asks_torch_and_is_never_fp16(monkeypatch):
    monkeypatch.setattr(finetune_kit.precision, "cuda_has_native_bf16", lambda: True)
    assert auto_mixed_precision(torch.device("cuda", 0))[0] == "bf16"
    monkeypatch.setattr(finetune_kit.precision, "cuda_has_native_bf16", lambda: False)
    assert auto_mixed_precision(torch.device("cuda", 0)) == ("no", "the GPU does not support bf16 natively")
    assert auto_mixed_precision(torch.device("mps"))[0] == "no"


def test_processes_agree_on_bf16_only_when_every_one_has_it():
    assert agreed_mixed_precision(["bf16", "bf16"]) == "bf16"
    assert agreed_mixed_precision(["bf16", "no"]) == "no"
    assert agreed_mixed_precision(["no"]) == "no"


def test_auto_is_a_setting_value_and_the_default_stays_no(tmp_path):
    base = {"task": "text-classification", "model": "m", "output_dir": "o", "train_file": "t.csv"}
    assert load_config(**base).mixed_precision == "no"
    card = tmp_path / "card.yaml"
    card.write_text("".join(f"{k}: {v}\n" for k, v in base.items()) + "mixed_precision: auto\n")
    assert load_config(card).mixed_precision == "auto"
    assert load_config(card, ["mixed_precision=bf16"]).mixed_precision == "bf16"


def test_an_unknown_mixed_precision_on_the_cli_is_one_line_naming_the_allowed_values(tmp_path):
    """(The Python API's message: tests/test_config.py.)"""
    result = CliRunner().invoke(app, ["train", "--task", "text-classification", "--model", "m", "--train", "t.csv",
                                      "--output", str(tmp_path / "o"), "--mixed-precision", "fp8"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: mixed_precision: 'fp8' is not allowed; choose one of no, fp16, bf16, auto"


# ---- training runs ----

@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    return write_csv(tmp_path_factory.mktemp("data") / "train.csv", rows)


def train(tiny_encoder, train_file, output_dir, **settings):
    settings = {"batch_size": 8, "max_steps": 2, "report_plots": False, "bootstrap_resamples": 0, **settings}
    return fk.train(task="text-classification", model=tiny_encoder, train_file=str(train_file),
                    output_dir=str(output_dir), **settings)


def profiled_training(tiny_encoder, train_file, output_dir, mixed_precision, monkeypatch):
    """Two optimizer steps under the profiler; what ran and what the optimizer held."""
    seen = {"linear_outputs": set(), "linear_calls": 0, "stepped": []}

    def linear_hook(module, inputs, output):
        if isinstance(module, torch.nn.Linear):
            seen["linear_outputs"].add(output.dtype)
            seen["linear_calls"] += 1

    def before_step(optimizer, args, kwargs):
        seen["stepped"].append({(p.dtype, p.grad.dtype) for group in optimizer.param_groups for p in group["params"]})

    trainers = []

    class KeptTrainer(finetune_kit.api.Trainer):
        def train(self):
            trainers.append(self)
            return super().train()

    monkeypatch.setattr(finetune_kit.api, "Trainer", KeptTrainer)
    handles = [torch.nn.modules.module.register_module_forward_hook(linear_hook),
               register_optimizer_step_pre_hook(before_step)]
    try:
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
            result = train(tiny_encoder, train_file, output_dir, mixed_precision=mixed_precision)
    finally:
        for handle in handles:
            handle.remove()
    assert result.global_step == 2
    seen["events"] = [(e.name, tuple(e.input_dtypes or ())) for e in profiler.events()]
    seen["trainer"] = trainers[0]
    return seen


def matmul_dtypes(events, names=MATMULS):
    """The dtypes of the tensor inputs of every matrix product ``names`` that ran."""
    return {dtype for name, dtypes in events if name in names for dtype in dtypes if dtype not in NOT_TENSORS}


def assert_fp32_master_weights(seen, output_dir):
    trainer = seen["trainer"]
    assert seen["stepped"] and all(pairs == {(torch.float32, torch.float32)} for pairs in seen["stepped"])
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    adamw = trainer.optimizer.optimizer
    trained = [p for group in adamw.param_groups for p in group["params"]]
    assert trained and all(p in adamw.state for p in trained)
    assert {name: value.dtype for state in adamw.state.values() for name, value in state.items()
            if name != "step"} == {"exp_avg": torch.float32, "exp_avg_sq": torch.float32}
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(output_dir / "model.safetensors").values()} == {torch.float32}


def test_bf16_training_runs_the_matmuls_in_bf16_and_keeps_fp32_master_weights(tiny_encoder, train_file, tmp_path,
                                                                               monkeypatch):
    seen = profiled_training(tiny_encoder, train_file, tmp_path / "m", "bf16", monkeypatch)
    events, calls = seen["events"], seen["linear_calls"]
    assert calls > 0
    # Every Linear call is one addmm, its backward pass mm's; all of them on bf16 inputs.
    assert sum(name == "aten::addmm" for name, _ in events) == calls
    assert sum(name == "aten::mm" for name, _ in events) >= calls
    assert matmul_dtypes(events, LINEAR_MATMULS) == {"c10::BFloat16"}
    assert matmul_dtypes(events, MATMULS) == {"c10::BFloat16"}  # attention's products too
    # Each Linear call is one aten::linear on bf16 weights (autocast casts them in an outer
    # aten::linear, on the fp32 weights).
    assert sum(name == "aten::linear" and dtypes[1] == "c10::BFloat16" for name, dtypes in events) == calls
    assert seen["linear_outputs"] == {torch.bfloat16}
    assert_fp32_master_weights(seen, tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "finetune_kit.json").read_text())
    assert manifest["config"]["mixed_precision"] == "bf16"


def test_no_mixed_precision_runs_the_matmuls_in_fp32(tiny_encoder, train_file, tmp_path, monkeypatch):
    seen = profiled_training(tiny_encoder, train_file, tmp_path / "m", "no", monkeypatch)
    assert matmul_dtypes(seen["events"]) == {"float"}
    assert seen["linear_outputs"] == {torch.float32}
    assert [name for name, dtypes in seen["events"] if "c10::BFloat16" in dtypes] == []
    assert_fp32_master_weights(seen, tmp_path / "m")


def recorded_precision(output_dir: Path) -> dict[str, str]:
    """mixed_precision as the manifest, the model card and the training log record it."""
    manifest = json.loads((output_dir / "finetune_kit.json").read_text())
    card = (output_dir / "README.md").read_text()
    [row] = [line for line in card.splitlines() if line.startswith("| mixed_precision |")]
    log = [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]
    [end] = [record for record in log if record["event"] == "train_end"]
    return {"manifest": manifest["config"]["mixed_precision"], "card": row.split("|")[2].strip(),
            "log": end["mixed_precision"]}


def spy_on_accelerators(monkeypatch) -> list[str]:
    """The mixed_precision of every Accelerator made from here on."""
    import accelerate

    made: list[str] = []
    original = accelerate.Accelerator.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self.state.mixed_precision)

    monkeypatch.setattr(accelerate.Accelerator, "__init__", spy)
    return made


def test_auto_on_the_cli_runs_and_records_what_this_host_resolves_to(tiny_encoder, train_file, tmp_path, monkeypatch):
    expected, why = auto_mixed_precision(CPU)
    made = spy_on_accelerators(monkeypatch)
    result = CliRunner().invoke(app, ["train", "--task", "text-classification", "--model", tiny_encoder, "--train",
                                      str(train_file), "--output", str(tmp_path / "m"), "--max-steps", "1",
                                      "--batch-size", "8", "--no-report-plots", "--bootstrap-resamples", "0",
                                      "--mixed-precision", "auto"])
    assert result.exit_code == 0, result.output
    assert f"Mixed precision: {expected} (auto: {why})" in " ".join(result.output.split())
    assert made[-1] == expected  # the run's Accelerator
    assert recorded_precision(tmp_path / "m") == {"manifest": expected, "card": expected, "log": expected}


@pytest.mark.parametrize("resolved", ["bf16", "no"])
def test_auto_records_the_value_it_resolved_to(tiny_encoder, train_file, tmp_path, monkeypatch, resolved):
    monkeypatch.setattr(finetune_kit.accelerator, "auto_mixed_precision", lambda device: (resolved, "test"))
    made = spy_on_accelerators(monkeypatch)
    train(tiny_encoder, train_file, tmp_path / "m", mixed_precision="auto", max_steps=1)
    assert made[-1] == resolved
    assert recorded_precision(tmp_path / "m") == {"manifest": resolved, "card": resolved, "log": resolved}


def test_fp16_on_a_cpu_is_an_error_before_anything_is_written(tiny_encoder, train_file, tmp_path):
    """Accelerate ignores fp16 on a CPU (it would train in fp32 while the run said fp16)."""
    if torch.cuda.is_available():
        pytest.skip("checks a run on the CPU")
    with pytest.raises(ConfigError, match=r"^mixed_precision: fp16 needs a GPU; this run trains on the CPU, where "
                                          r"Accelerate would run it in fp32: use bf16, auto or no$"):
        train(tiny_encoder, train_file, tmp_path / "m", mixed_precision="fp16")
    assert not (tmp_path / "m").exists()


AGREEMENT_SCRIPT = """\
import os
import sys

from accelerate.state import AcceleratorState

import finetune_kit as fk
import finetune_kit.accelerator

# Process 0 would pick bf16, process 1 would not: the run must agree on one value.
rank = int(os.environ["RANK"])
finetune_kit.accelerator.auto_mixed_precision = lambda device: ("bf16" if rank == 0 else "no", f"process {rank}")
fk.train(task="text-classification", model=sys.argv[1], train_file=sys.argv[2], output_dir=sys.argv[3],
         batch_size=4, max_steps=1, report_plots=False, bootstrap_resamples=0, mixed_precision="auto")
# One write per line: the processes share the pipe, and print's separate newline can interleave.
sys.stdout.write(f"process {rank} ran with {AcceleratorState().mixed_precision}\\n")
sys.stdout.flush()
"""


def test_launched_processes_agree_on_what_auto_means(tiny_encoder, train_file, tmp_path):
    """Under ``accelerate launch`` every process resolves auto alike: bf16 only where all have it."""
    from tests.launched import launch

    script = tmp_path / "agree.py"
    script.write_text(AGREEMENT_SCRIPT, encoding="utf-8")
    out = tmp_path / "m"
    done = launch([str(script), tiny_encoder, str(train_file), str(out)])
    assert sorted(line for line in done.stdout.splitlines() if " ran with " in line) == [
        "process 0 ran with no", "process 1 ran with no"], done.stdout[-3000:]
    assert "Mixed precision: no (auto: not every process has native bf16)" in " ".join(done.stderr.split()), \
        done.stderr[-3000:]
    assert recorded_precision(out) == {"manifest": "no", "card": "no", "log": "no"}
