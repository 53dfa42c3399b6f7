"""Running a model over a split: features from raw rows, outputs streamed batch by batch
(gathered across processes, each feature kept once), and the task's predictions and metrics
from them. Training evaluates through here, and so do ``predict`` and ``evaluate``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from datasets import Dataset
from torch.utils.data import DataLoader

from .batching import sorted_eval_batches
from .onednn import onednn_linears
from .task import ROW_INDEX, DataError, OutputBatch, Task

FEATURE_INDEX = "_feature_index"



# datasets.map's batch size: a split of at most this many rows is one batch of it.
MAP_BATCH_ROWS = 1000


def in_memory_dataset(columns: dict[str, list]) -> Dataset:
    """``Dataset.from_dict(columns)`` with a random fingerprint instead of a hash of the data:
    such a dataset is never cached, and hashing it is most of a small predict call's time. Values
    that Arrow cannot take as they are go through ``from_dict``, and its errors."""
    import pyarrow as pa
    from datasets.fingerprint import generate_random_fingerprint
    from datasets.table import InMemoryTable

    try:
        table = InMemoryTable.from_pydict(columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return Dataset.from_dict(columns)
    return Dataset(table, fingerprint=generate_random_fingerprint())


def rows_dataset(rows: list[dict[str, Any]]) -> Dataset:
    """``Dataset.from_list(rows)`` as ``in_memory_dataset`` makes it (the first row's keys)."""
    return in_memory_dataset({key: [row.get(key) for row in rows] for key in rows[0]} if rows else {})


def input_dataset(rows: list[dict[str, Any]], source: str) -> Dataset:
    """``rows_dataset`` of the rows made from a ``predict`` call's inputs; inputs whose values do not
    make one table (a column holding text in one input and a number in another) are a
    ``DataError`` naming ``source``."""
    from pyarrow import ArrowException

    try:
        return rows_dataset(rows)
    except ArrowException as exc:
        raise DataError(f"{source}: the inputs do not make one table ({' '.join(str(exc).split())})") from None


def prepare_features(task: Task, raw: Dataset, split: str) -> Dataset:
    """Run the task's preprocessing over a raw split (the raw row index passed as ``ROW_INDEX``).

    A split of at most ``MAP_BATCH_ROWS`` rows is preprocessed in one call, the one batch
    ``datasets.map`` would make of it, without ``map``: its cache fingerprint pickles the task and
    its tokenizer, most of the time of a predict call for a few inputs."""
    if len(raw) <= MAP_BATCH_ROWS:
        features = task.preprocess({**raw.to_dict(), ROW_INDEX: list(range(len(raw)))}, split)
        count = len(features["example_index"])
        return in_memory_dataset({**features, FEATURE_INDEX: list(range(count))})

    def run(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        return task.preprocess({**batch, ROW_INDEX: indices}, split)

    features = raw.map(run, batched=True, with_indices=True, remove_columns=raw.column_names,
                       desc=f"Preprocessing {split}" if len(raw) > 5000 else None)
    return features.add_column(FEATURE_INDEX, list(range(len(features))))


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
        batch_sampler=sorted_eval_batches(task.feature_lengths(features), batch_size),
        collate_fn=make_collate(task),
    )
    loader = accelerator.prepare_data_loader(loader)
    try:
        yield from _run_loader(accelerator, model, loader, len(features), losses)
    finally:
        forget_data_loader(accelerator, loader)


def forget_data_loader(accelerator: Accelerator, loader: Any) -> None:
    """Drop an evaluation's data loader from those Accelerate keeps for ``save_state``: kept, it
    would hold every split and predict call's features for the life of the process."""
    registered = getattr(accelerator, "_dataloaders", None)
    if registered is not None:
        registered[:] = [kept for kept in registered if kept is not loader]


def _run_loader(accelerator: Accelerator, model: torch.nn.Module, loader: Any, count: int,
                losses: list[float] | None) -> Iterator[OutputBatch]:
    seen = np.zeros(count, dtype=bool)
    model.eval()
    # no_grad rather than inference_mode: FSDP's unsharded parameters made under inference mode
    # cannot be used again by the training steps that follow an evaluation.
    with torch.no_grad():
        for batch in loader:
            inputs, indices = split_model_inputs(batch)
            with onednn_linears():
                output = model(**inputs)
            tensors = _output_tensors(output)
            if accelerator.num_processes > 1:
                indices = accelerator.pad_across_processes(indices, dim=0, pad_index=-1)
                tensors = {k: _pad_all_dims(accelerator, v) for k, v in tensors.items()}
                indices = accelerator.gather(indices)
                tensors = {k: accelerator.gather(v) for k, v in tensors.items()}
            index_array = indices.cpu().numpy()
            keep = first_sightings(index_array, seen)
            if losses is not None and getattr(output, "loss", None) is not None:
                losses.extend(_batch_losses(accelerator, output.loss, keep))
            if not keep.any():
                continue
            seen[index_array[keep]] = True
            arrays = {k: v.float().cpu().numpy()[keep] for k, v in tensors.items()}
            yield index_array[keep], arrays


def first_sightings(indices: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Mask of the gathered positions to keep: real features (not the -1 padding) that no
    earlier batch held and no earlier position of this one holds (with fewer batches than
    processes, two processes run the same batch at once)."""
    keep = np.zeros(len(indices), dtype=bool)
    real = np.flatnonzero(indices >= 0)
    _, first = np.unique(indices[real], return_index=True)
    firsts = real[first]
    keep[firsts] = ~seen[indices[firsts]]
    return keep


def _batch_losses(accelerator: Accelerator, loss: torch.Tensor, keep: np.ndarray) -> list[float]:
    """The loss of each process's batch, those that only repeat earlier features left out, so
    that the mean over batches is the one a single process computes over the same batches."""
    per_process = accelerator.gather(loss.detach().float().reshape(1)).cpu().tolist()
    fresh = keep.reshape(len(per_process), -1).any(axis=1)
    return [value for value, counted in zip(per_process, fresh) if counted]


def _pad_all_dims(accelerator: Accelerator, tensor: torch.Tensor) -> torch.Tensor:
    for dim in range(tensor.dim()):
        tensor = accelerator.pad_across_processes(tensor, dim=dim)
    return tensor


def predict_raw(
    accelerator: Accelerator, model: Any, task: Task, raw: Dataset, batch_size: int,
    features: Dataset | None = None, losses: list[float] | None = None,
) -> list[dict[str, Any]]:
    """Predictions for every raw example, streamed through the task's postprocessing."""
    if features is None:
        features = prepare_features(task, raw, "predict")
    return task.postprocess(raw, features, stream_outputs(accelerator, model, features, task, batch_size, losses))


def evaluate_raw(
    accelerator: Accelerator, model: Any, task: Task, raw: Dataset, features: Dataset, batch_size: int,
    calibrate: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """Metrics and predictions of a split, and whether the task tuned its decision settings:
    with ``calibrate``, the task first tunes them (``calibrate``, e.g. a threshold) on these
    predictions, then scores them. A ``calibrate`` that returns nothing counts as tuned."""
    losses: list[float] = []
    predictions = predict_raw(accelerator, model, task, raw, batch_size, features, losses)
    tuned = calibrate and task.calibrate(predictions, raw) is not False
    metrics = task.compute_metrics(predictions, raw)
    if losses:
        metrics["loss"] = float(sum(losses) / len(losses))
    return metrics, predictions, tuned
