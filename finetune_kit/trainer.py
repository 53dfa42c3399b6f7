"""The one training loop, on Accelerate, for every task.

It owns batching, the optimizer and schedule, gradient accumulation and clipping, evaluation,
the best checkpoint and early stopping, logging and progress. It knows nothing about any task:
everything task-specific goes through the ``Task`` methods.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .batching import LengthGroupedBatchSampler, sorted_eval_batches
from .config import TrainConfig
from .task import OutputBatch, Task

FEATURE_INDEX = "_feature_index"
EXAMPLE_INDEX = "_index"


def new_accelerator(**kwargs: Any) -> Accelerator:
    """An Accelerator with these settings, even when an earlier run in this process used others.

    Accelerate keeps its settings in a process-wide singleton, so a second ``train()`` with
    another ``mixed_precision`` (a notebook, a sweep) would fail; the per-run part of that state
    is cleared first. The distributed part (process group, ranks) is kept.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(**kwargs)


def prepare_features(task: Task, raw: Dataset, split: str) -> Dataset:
    """Run the task's preprocessing over a raw split (the raw row index passed as ``_index``)."""

    def run(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        return task.preprocess({**batch, EXAMPLE_INDEX: indices}, split)

    features = raw.map(run, batched=True, with_indices=True, remove_columns=raw.column_names,
                       desc=f"Preprocessing {split}" if len(raw) > 5000 else None)
    return features.add_column(FEATURE_INDEX, list(range(len(features))))


def feature_lengths(features: Dataset) -> list[int]:
    return [len(ids) for ids in features["input_ids"]]


def make_collate(task: Task) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """Wrap the task's collate so every batch carries the indices of its features."""

    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        indices = [item.pop(FEATURE_INDEX) for item in items]
        batch = task.collate(items)
        batch[FEATURE_INDEX] = torch.tensor(indices, dtype=torch.long)
        return batch

    return collate


def split_model_inputs(batch: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor]:
    indices = batch.pop(FEATURE_INDEX)
    return batch, indices


def _output_tensors(output: Any) -> dict[str, torch.Tensor]:
    items = output.items() if hasattr(output, "items") else vars(output).items()
    return {k: v for k, v in items if k != "loss" and isinstance(v, torch.Tensor)}


def stream_outputs(
    accelerator: Accelerator,
    model: torch.nn.Module,
    features: Dataset,
    task: Task,
    batch_size: int,
    losses: list[float] | None = None,
) -> Iterator[OutputBatch]:
    """Run the model over ``features`` and yield (feature indices, numpy outputs) per batch.

    Batches are sorted by length within chunks. Across processes, every batch is padded to a
    common shape (indices padded with -1), gathered, and each feature is kept exactly once by
    its index: the duplicates Accelerate adds to even out the last batches are dropped, and no
    real feature is, whatever the batch sizes.
    """
    loader = DataLoader(
        features,
        batch_sampler=sorted_eval_batches(feature_lengths(features), batch_size),
        collate_fn=make_collate(task),
    )
    loader = accelerator.prepare_data_loader(loader)
    seen = np.zeros(len(features), dtype=bool)
    model.eval()
    with torch.inference_mode():
        for batch in loader:
            inputs, indices = split_model_inputs(batch)
            output = model(**inputs)
            tensors = _output_tensors(output)
            if losses is not None and getattr(output, "loss", None) is not None:
                count = torch.tensor(float(len(indices)), device=accelerator.device)
                weighted = accelerator.gather(output.loss.detach().float() * count).sum()
                losses.append(float(weighted) / max(1.0, float(accelerator.gather(count).sum())))
            if accelerator.num_processes > 1:
                indices = accelerator.pad_across_processes(indices, dim=0, pad_index=-1)
                tensors = {k: _pad_all_dims(accelerator, v) for k, v in tensors.items()}
                indices = accelerator.gather(indices)
                tensors = {k: accelerator.gather(v) for k, v in tensors.items()}
            index_array = indices.cpu().numpy()
            keep = index_array >= 0
            keep[keep] = ~seen[index_array[keep]]
            if not keep.any():
                continue
            seen[index_array[keep]] = True
            arrays = {k: v.float().cpu().numpy()[keep] for k, v in tensors.items()}
            yield index_array[keep], arrays


def _pad_all_dims(accelerator: Accelerator, tensor: torch.Tensor) -> torch.Tensor:
    for dim in range(tensor.dim()):
        tensor = accelerator.pad_across_processes(tensor, dim=dim)
    return tensor


def head_learning_rate(config: TrainConfig, task: Task) -> float | None:
    """The learning rate of the task's head modules: the run's ``head_learning_rate``, else the
    task's ``default_head_learning_rate``, else None (the encoder's)."""
    if config.head_learning_rate is not None:
        return config.head_learning_rate
    return getattr(task, "default_head_learning_rate", None)


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
    """JSON-lines log of training and evaluation events (main process only)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")


class Trainer:
    """Fine-tunes ``model`` on the train features and evaluates on the validation split.

    ``evaluate_split(name)`` must return the task metrics for a split; it is given by the
    caller so the loop never knows how predictions are scored. ``save_best()`` is called on
    the main process whenever the chosen metric improves.
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
    ) -> None:
        self.config = config
        self.task = task
        self.accelerator = accelerator
        self.evaluate_split = evaluate_split
        self.save_best = save_best
        self.metric = config.metric_for_best or task.default_metric
        self.greater_is_better = task.greater_is_better if config.metric_for_best is None else not self.metric.endswith("loss")
        self.state = TrainState()
        self.log = TrainingLog(log_path, accelerator.is_main_process)

        self.sampler = LengthGroupedBatchSampler(
            feature_lengths(train_features), config.batch_size, seed=config.seed,
            group_by_length=config.group_by_length,
        )
        loader = DataLoader(train_features, batch_sampler=self.sampler, collate_fn=make_collate(task))
        batches_per_epoch = len(loader)
        self.steps_per_epoch = max(1, math.ceil(batches_per_epoch / config.gradient_accumulation_steps))
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
        self.model, self.optimizer, self.loader, self.scheduler = accelerator.prepare(
            model, optimizer, loader, scheduler
        )

    def _parameter_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """AdamW groups: weight decay except on biases and norms; the task's head modules
        (``head_modules``) at ``head_learning_rate`` when one is set."""
        head_lr = head_learning_rate(self.config, self.task)
        heads = tuple(getattr(self.task, "head_modules", ()))
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

    def _evaluate(self) -> bool:
        """Evaluate, keep the best weights, and say whether to stop early."""
        if self.evaluate_split is None:
            return False
        metrics = self.evaluate_split(self.model)
        self.model.train()
        value = metrics.get(self.metric)
        if value is None:
            raise KeyError(f"metric_for_best: '{self.metric}' is not among the metrics ({', '.join(metrics)})")
        record = {"event": "evaluate", "step": self.state.global_step, "epoch": round(self.state.epoch, 4),
                  "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
        self.log.write(record)
        self.state.history.append(record)
        if self._improved(value):
            self.state.best_metric = float(value)
            self.state.best_step = self.state.global_step
            self.state.evaluations_without_improvement = 0
            self.accelerator.wait_for_everyone()
            if self.accelerator.is_main_process:
                self.save_best(self.accelerator.unwrap_model(self.model))
            self.accelerator.wait_for_everyone()
        else:
            self.state.evaluations_without_improvement += 1
        patience = self.config.early_stopping_patience
        return patience is not None and self.state.evaluations_without_improvement >= patience

    def train(self) -> TrainState:
        config, accelerator, state = self.config, self.accelerator, self.state
        set_seed(config.seed)
        progress = tqdm(total=self.total_steps, desc="Training", disable=not accelerator.is_local_main_process,
                        dynamic_ncols=True)
        self.model.train()
        running_loss, running_batches = 0.0, 0
        stop = False
        epoch = 0
        start = time.perf_counter()
        while not stop and state.global_step < self.total_steps:
            self.sampler.set_epoch(epoch)
            for step_in_epoch, batch in enumerate(self.loader):
                inputs, _ = split_model_inputs(batch)
                mask = inputs.get("attention_mask")
                state.train_padded_tokens += int(inputs["input_ids"].numel()) * accelerator.num_processes
                state.train_tokens += (int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())) \
                    * accelerator.num_processes
                with accelerator.accumulate(self.model):
                    loss = self.model(**inputs).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm:
                        accelerator.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad()
                running_loss += float(loss.detach())
                running_batches += 1
                if not accelerator.sync_gradients:
                    continue
                state.global_step += 1
                state.epoch = epoch + (step_in_epoch + 1) / len(self.loader)
                elapsed = state.train_runtime_s + time.perf_counter() - start
                progress.update(1)
                progress.set_postfix(loss=f"{running_loss / running_batches:.4f}",
                                     tok_s=f"{state.train_tokens / max(elapsed, 1e-9):.0f}")
                if state.global_step % config.logging_steps == 0 or state.global_step == self.total_steps:
                    self.log.write({"event": "train", "step": state.global_step, "epoch": round(state.epoch, 4),
                                    "loss": running_loss / running_batches,
                                    "learning_rate": self.scheduler.get_last_lr()[0],
                                    "tokens_per_s": state.train_tokens / max(elapsed, 1e-9),
                                    "elapsed_s": elapsed})
                    running_loss, running_batches = 0.0, 0
                if config.eval_steps and state.global_step % config.eval_steps == 0:
                    state.train_runtime_s += time.perf_counter() - start
                    stop = self._evaluate()
                    start = time.perf_counter()
                if stop or state.global_step >= self.total_steps:
                    break
            epoch += 1
            ended_epoch = state.global_step % self.steps_per_epoch == 0 or state.global_step >= self.total_steps
            if not stop and ended_epoch and not (config.eval_steps and state.global_step % config.eval_steps == 0):
                state.train_runtime_s += time.perf_counter() - start
                stop = self._evaluate()
                start = time.perf_counter()
        state.train_runtime_s += time.perf_counter() - start
        progress.close()
        if state.best_step is None:  # no validation data: the final weights are the model
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                self.save_best(accelerator.unwrap_model(self.model))
            accelerator.wait_for_everyone()
        self.log.write({"event": "train_end", "step": state.global_step, "epoch": round(state.epoch, 4),
                        "train_runtime_s": state.train_runtime_s, "train_tokens": state.train_tokens,
                        "train_padded_tokens": state.train_padded_tokens,
                        "tokens_per_s": state.train_tokens / max(state.train_runtime_s, 1e-9),
                        "best_metric": state.best_metric, "best_step": state.best_step,
                        "metric_for_best": self.metric})
        return state
