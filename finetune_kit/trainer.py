"""The one training loop, on Accelerate, for every task.

It owns batching, the optimizer and schedule, gradient accumulation and clipping, evaluation,
the best checkpoint and early stopping, logging and progress. It knows nothing about any task:
everything task-specific goes through the ``Task`` methods.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, is_compiled_module, set_seed
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .batching import LengthGroupedBatchSampler
from .checkpoints import (
    check_settings,
    read_checkpoint,
    remove_checkpoints,
    resume_option,
    run_settings,
    save_checkpoint,
)
from .config import ConfigError, TrainConfig
from .dropout import dropout_masks
from .embedding_gradient import kept_embedding_gradients
from .files import atomic_write_text
from .host_memory import (
    heap_trim_interval,
    keep_freed_memory_requested,
    raise_heap_thresholds,
    reusing_freed_memory,
    trim_heap,
)
from .inference import make_collate, split_model_inputs
from .task import Task, greater_is_better
from .trackers import log_evaluation, log_scalars

def head_learning_rate(config: TrainConfig, task: Task) -> float | None:
    """The learning rate of the task's head modules: the run's ``head_learning_rate``, else the
    task's ``default_head_learning_rate``, else None (the encoder's)."""
    if config.head_learning_rate is not None:
        return config.head_learning_rate
    return task.default_head_learning_rate


def give_deepspeed_the_batch_size(accelerator: Accelerator, batch_size: int) -> None:
    """Under DeepSpeed, set its per-process batch size (unless its config sets one).

    Accelerate reads it from the training loader's ``batch_size``, which a loader driven by a
    batch sampler does not have (it is None), and would refuse to prepare the run.
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None and plugin.is_auto("train_micro_batch_size_per_gpu"):
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = batch_size


def make_adamw(groups: list[dict[str, Any]], lr: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused where torch has a fused kernel for the device.

    On a CPU the fused step is several times faster than the default multi-tensor one; with an
    encoder's large embedding matrix that is a sizeable share of each training step.
    """
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(groups, lr=lr, fused=True)
        except (RuntimeError, ValueError):
            pass
    return torch.optim.AdamW(groups, lr=lr)


@dataclass
class TrainState:
    """Counters of a run; what the log and the final summary report."""

    global_step: int = 0
    epoch: float = 0.0
    train_tokens: int = 0
    train_padded_tokens: int = 0
    train_runtime_s: float = 0.0
    best_metric: float | None = None
    best_step: int | None = None
    evaluations_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class TrainingLog:
    """JSON-lines log of training and evaluation events (main process only).

    A fresh run starts it empty. A resumed run keeps the records up to its checkpoint's step;
    those the interrupted run wrote after it are dropped, since the resumed run writes them again.
    The file is (re)written only with the first record, so a run that fails before it leaves the
    log as it was.
    """

    def __init__(self, path: Path, enabled: bool, resumed_at_step: int | None = None) -> None:
        self.path = path
        self.enabled = enabled
        self._kept: str | None = None  # what the file starts with, until it is written
        if enabled:
            self._kept = "" if resumed_at_step is None else log_lines_through(path, resumed_at_step)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._kept is not None:
            atomic_write_text(self.path, self._kept)
            self._kept = None
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def log_lines_through(path: Path, step: int) -> str:
    """The records of a log up to ``step``, without a finished run's ``train_end`` record and
    without a last line cut short by a crash."""
    if not path.is_file():
        return ""
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") != "train_end" and record.get("step", 0) <= step:
            kept.append(line + "\n")
    return "".join(kept)


class Trainer:
    """Fine-tunes ``model`` on the train features and evaluates on the validation split.

    ``evaluate_split(name)`` must return the task metrics for a split; it is given by the
    caller so the loop never knows how predictions are scored. ``save_best(model)`` is called on
    every process (gathering a sharded model's weights is collective) whenever the chosen
    metric improves; it writes from the main process only.

    With ``resume_from`` (a checkpoint folder), the run continues from that checkpoint exactly:
    the same batches, dropout masks, updates and evaluations as if it had never stopped.
    """

    def __init__(
        self,
        config: TrainConfig,
        task: Task,
        model: torch.nn.Module,
        train_features: Dataset,
        accelerator: Accelerator,
        evaluate_split: Callable[[torch.nn.Module], dict[str, Any]] | None,
        save_best: Callable[[torch.nn.Module], None],
        log_path: Path,
        resume_from: Path | None = None,
        data_fingerprints: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.task = task
        self.accelerator = accelerator
        self.evaluate_split = evaluate_split
        self.save_best = save_best
        self.metric = config.metric_for_best or task.default_metric
        self.greater_is_better = greater_is_better(task, self.metric, config.greater_is_better)
        self.state = TrainState()
        self.running_loss, self.running_batches = 0.0, 0
        self.output_dir = Path(config.output_dir)
        self.settings = {**run_settings(config, accelerator.num_processes),
                         "train_features": len(train_features), "data": data_fingerprints or {}}
        self.resume_from = resume_from
        self.resumed = read_checkpoint(resume_from) if resume_from is not None else None
        if self.resumed is not None:
            check_settings(resume_from, self.resumed, {"train_features": len(train_features)}, resume_option(config))
        self._writing = False
        # On the CPU glibc's heap is handed back every few steps (host_memory.py).
        self.trim_every = heap_trim_interval() if accelerator.device.type == "cpu" else 0
        self.log = TrainingLog(log_path, accelerator.is_main_process,
                               resumed_at_step=self.resumed["step"] if self.resumed is not None else None)

        self.sampler = LengthGroupedBatchSampler(
            task.feature_lengths(train_features), config.batch_size, seed=config.seed,
            group_by_length=config.group_by_length,
        )
        # Its own generator: starting an epoch's iterator (or a resumed one that skips batches)
        # must not draw from the global RNG, which the dropout masks come from.
        loader = DataLoader(train_features, batch_sampler=self.sampler, collate_fn=make_collate(task),
                            generator=torch.Generator().manual_seed(config.seed))
        # Each process gets every num_processes-th batch (the last round evened out by Accelerate).
        batches_per_epoch = math.ceil(len(loader) / accelerator.num_processes)
        # Accelerate's count: a DeepSpeed config may set its own.
        self.steps_per_epoch = max(1, math.ceil(batches_per_epoch / accelerator.gradient_accumulation_steps))
        if config.max_steps:
            self.total_steps = config.max_steps
        else:
            self.total_steps = max(1, math.ceil(config.epochs * self.steps_per_epoch))
        optimizer = make_adamw(self._parameter_groups(model), config.learning_rate, accelerator.device)
        # Under Accelerate the scheduler steps once per process, so it counts whole-data steps.
        scheduler = get_linear_schedule_with_warmup(
            optimizer,
            num_warmup_steps=int(config.warmup_ratio * self.total_steps) * accelerator.num_processes,
            num_training_steps=self.total_steps * accelerator.num_processes,
        )
        give_deepspeed_the_batch_size(accelerator, config.batch_size)
        self.model, self.optimizer, self.loader, self.scheduler = accelerator.prepare(
            model, optimizer, loader, scheduler
        )

    def _parameter_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """AdamW groups: weight decay except on biases and norms; the task's head modules
        (``head_modules``) at ``head_learning_rate`` when one is set."""
        head_lr = head_learning_rate(self.config, self.task)
        heads = tuple(self.task.head_modules)
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            is_head = head_lr is not None and any(part in heads for part in name.split("."))
            decays = not (param.ndim < 2 or "norm" in name.lower())
            groups.setdefault((is_head, decays), []).append(param)
        return [{"params": params, "weight_decay": self.config.weight_decay if decays else 0.0,
                 "lr": head_lr if is_head else self.config.learning_rate}
                for (is_head, decays), params in sorted(groups.items())]

    def _improved(self, value: float) -> bool:
        best = self.state.best_metric
        if best is None:
            return True
        return value > best if self.greater_is_better else value < best

    def _log_training(self, elapsed: float) -> None:
        """Log the mean loss since the last logging step, the learning rate and the throughput,
        to the training log and the run's trackers (``train/...``)."""
        state = self.state
        figures = {"loss": self.running_loss / self.running_batches, "learning_rate": self.scheduler.get_last_lr()[0],
                   "tokens_per_s": state.train_tokens / max(elapsed, 1e-9)}
        self.log.write({"event": "train", "step": state.global_step, "epoch": round(state.epoch, 4), **figures,
                        "elapsed_s": elapsed})
        log_scalars(self.accelerator, "train", {**figures, "epoch": state.epoch}, state.global_step)
        self.running_loss, self.running_batches = 0.0, 0

    def _evaluate(self) -> bool:
        """Evaluate, keep the best weights, and say whether to stop early."""
        if self.evaluate_split is None:
            return False
        metrics = self.evaluate_split(self.model)
        self.model.train()
        value = metrics.get(self.metric)
        if value is None:
            raise ConfigError(f"metric_for_best: '{self.metric}' is not among the metrics ({', '.join(metrics)})")
        record = {"event": "evaluate", "step": self.state.global_step, "epoch": round(self.state.epoch, 4),
                  "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
        self.log.write(record)
        log_evaluation(self.accelerator, "validation", record["metrics"], self.state.global_step)
        self.state.history.append(record)
        if self._improved(value):
            self.state.best_metric = float(value)
            self.state.best_step = self.state.global_step
            self.state.evaluations_without_improvement = 0
            self.save_best(self.model)
        else:
            self.state.evaluations_without_improvement += 1
        return self._patience_reached()

    def _patience_reached(self) -> bool:
        patience = self.config.early_stopping_patience
        return patience is not None and self.state.evaluations_without_improvement >= patience

    def _elapsed(self) -> float:
        return self.state.train_runtime_s + time.perf_counter() - self._clock_started

    @contextmanager
    def _clock_paused(self) -> Iterator[None]:
        """Evaluation and checkpointing do not count as training time."""
        self.state.train_runtime_s += time.perf_counter() - self._clock_started
        yield
        self._clock_started = time.perf_counter()

    def _epoch_batches(self, epoch: int, batches_done: int) -> Iterable[dict[str, Any]]:
        """The batches of ``epoch`` after the first ``batches_done`` (those a resumed run has
        trained on already); the order is a function of the seed and the epoch alone."""
        self.loader.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self.task.set_epoch(epoch)  # for tasks that draw per-epoch inputs (masks)
        if batches_done == 0:
            return self.loader
        return self.accelerator.skip_first_batches(self.loader, batches_done)

    def _start_writing(self) -> None:
        """Called once the run's first optimizer step is done: from here on the run writes into
        the output directory, and a fresh run clears an earlier run's checkpoints (there only
        when overwriting it). A run that fails before this leaves the directory as it was."""
        if self._writing:
            return
        self._writing = True
        if self.resumed is None and self.accelerator.is_main_process:
            remove_checkpoints(self.output_dir)

    def _save_checkpoint(self, epoch: int, batches_done: int) -> None:
        """Checkpoint at an optimizer-step boundary; training continues with batch
        ``batches_done`` of ``epoch``."""
        if not self.config.save_total_limit:
            return
        with self._clock_paused():
            loop_state = {"step": self.state.global_step, "epoch": epoch, "batches_done": batches_done,
                          "running_loss": self.running_loss, "running_batches": self.running_batches,
                          "state": asdict(self.state), "settings": self.settings}
            save_checkpoint(self.accelerator, self.output_dir, self.state.global_step, loop_state,
                            keep=self.config.save_total_limit)

    def _load_checkpoint(self) -> tuple[int, int]:
        """Restore the model, optimizer, scheduler and every process's RNG states (Accelerate),
        then the loop's own state; returns where the data continues (epoch, batches done)."""
        self.accelerator.load_state(str(self.resume_from))
        saved = self.resumed
        self.state = TrainState(**saved["state"])
        self.running_loss, self.running_batches = saved["running_loss"], saved["running_batches"]
        return saved["epoch"], saved["batches_done"]

    def train(self) -> TrainState:
        # On the CPU glibc's thresholds start where its own adjustment ends; asked for, a step's large
        # tensors reuse the memory the last one freed (host_memory.py).
        on_cpu = self.accelerator.device.type == "cpu"
        keep_freed = on_cpu and keep_freed_memory_requested()
        if on_cpu and not keep_freed:
            raise_heap_thresholds()
        with reusing_freed_memory() if keep_freed else nullcontext(), self._embedding_gradients_kept():
            return self._train()

    def _embedding_gradients_kept(self) -> Any:
        """Single-process training on the CPU keeps the embedding matrices' gradient buffers across
        steps (embedding_gradient.py); distributed wrappers and compilers get torch's own."""
        accelerator = self.accelerator
        if accelerator.device.type == "cpu" and accelerator.distributed_type == DistributedType.NO \
                and not is_compiled_module(self.model):
            return kept_embedding_gradients(self.model)
        return nullcontext()

    def _train(self) -> TrainState:
        config, accelerator = self.config, self.accelerator
        set_seed(config.seed)
        epoch, batches_done = self._load_checkpoint() if self.resumed is not None else (0, 0)
        state = self.state
        progress = tqdm(total=self.total_steps, initial=state.global_step, desc="Training",
                        disable=not accelerator.is_local_main_process, dynamic_ncols=True)
        self.model.train()
        # A compiled model is left to its compiler.
        masks = "torch" if is_compiled_module(self.model) else config.dropout_masks
        stop = self._patience_reached()
        self._clock_started = time.perf_counter()
        while not stop and state.global_step < self.total_steps:
            for batch_index, batch in enumerate(self._epoch_batches(epoch, batches_done), start=batches_done):
                inputs, _ = split_model_inputs(batch)
                mask = inputs.get("attention_mask")
                state.train_padded_tokens += int(inputs["input_ids"].numel()) * accelerator.num_processes
                state.train_tokens += (int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())) \
                    * accelerator.num_processes
                with accelerator.accumulate(self.model):
                    with dropout_masks(masks):
                        loss = self.model(**inputs).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm:
                        accelerator.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad()
                self.running_loss += float(loss.detach())
                self.running_batches += 1
                if not accelerator.sync_gradients:
                    continue
                state.global_step += 1
                if self.trim_every and state.global_step % self.trim_every == 0:
                    trim_heap()
                self._start_writing()
                state.epoch = epoch + (batch_index + 1) / len(self.loader)
                elapsed = self._elapsed()
                progress.update(1)
                progress.set_postfix(loss=f"{self.running_loss / self.running_batches:.4f}",
                                     tok_s=f"{state.train_tokens / max(elapsed, 1e-9):.0f}")
                if state.global_step % config.logging_steps == 0 or state.global_step == self.total_steps:
                    self._log_training(elapsed)
                if config.eval_steps and state.global_step % config.eval_steps == 0:
                    with self._clock_paused():
                        stop = self._evaluate()
                if stop or state.global_step >= self.total_steps:
                    break
                if config.save_steps and state.global_step % config.save_steps == 0 \
                        and batch_index + 1 < len(self.loader):  # the epoch's end has its own checkpoint
                    self._save_checkpoint(epoch, batch_index + 1)
            epoch, batches_done = epoch + 1, 0
            ended_epoch = state.global_step % self.steps_per_epoch == 0 or state.global_step >= self.total_steps
            if not stop and ended_epoch and not (config.eval_steps and state.global_step % config.eval_steps == 0):
                with self._clock_paused():
                    stop = self._evaluate()
            self._save_checkpoint(epoch, 0)  # after each epoch, and the run's last state
        state.train_runtime_s += time.perf_counter() - self._clock_started
        progress.close()
        if state.best_step is None:  # no validation data: the final weights are the model
            self.save_best(self.model)
        self.log.write({"event": "train_end", "step": state.global_step, "epoch": round(state.epoch, 4),
                        "train_runtime_s": state.train_runtime_s, "train_tokens": state.train_tokens,
                        "train_padded_tokens": state.train_padded_tokens,
                        "tokens_per_s": state.train_tokens / max(state.train_runtime_s, 1e-9),
                        "mixed_precision": config.mixed_precision,  # as run: auto resolved
                        "best_metric": state.best_metric, "best_step": state.best_step,
                        "metric_for_best": self.metric, "greater_is_better": self.greater_is_better})
        return state
