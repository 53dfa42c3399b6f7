"""Batch orders: length-grouped shuffled batches for training, length-sorted chunks for
evaluation. Both are deterministic functions of (seed, epoch), which exact resume relies on.
And the padding that collate functions build their batches with: ``padded`` for any id lists,
``InputPadder`` for the encoder's inputs (the tokenizer's padding)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

# The encoder inputs a tokenizer makes (``token_type_ids`` only for encoders that have them).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches of examples of similar length.

    The data is shuffled, cut into groups of ``group_size`` batches, each group sorted by
    length and cut into batches, and the batches shuffled again; the batch holding the
    longest example goes first, so that running out of memory happens at once if at all.
    With ``group_by_length=False`` it is plain shuffled batching.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        group_by_length: bool = True,
        group_size: int = 50,
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.group_size = group_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        if not self.group_by_length:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        group = self.batch_size * self.group_size
        batches: list[list[int]] = []
        for start in range(0, len(order), group):
            members = sorted(order[start : start + group], key=lambda i: -self.lengths[i])
            batches.extend(members[i : i + self.batch_size] for i in range(0, len(members), self.batch_size))
        shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        longest = max(range(len(shuffled)), key=lambda b: max(self.lengths[i] for i in shuffled[b]))
        shuffled[0], shuffled[longest] = shuffled[longest], shuffled[0]
        return shuffled

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


def sorted_eval_batches(lengths: Sequence[int], batch_size: int, chunk_batches: int = 64) -> list[list[int]]:
    """Evaluation batches: consecutive chunks of the data, each sorted by length.

    Sorting only within chunks keeps padding low while the features of one example (the
    windows of a long text) stay close together, so postprocessing can stream.
    """
    chunk = batch_size * chunk_batches
    batches: list[list[int]] = []
    for start in range(0, len(lengths), chunk):
        members = sorted(range(start, min(start + chunk, len(lengths))), key=lambda i: -lengths[i])
        batches.extend(members[i : i + batch_size] for i in range(0, len(members), batch_size))
    return batches


def padded(rows: Sequence[Sequence[int]], fill: int, width: int | None = None) -> torch.Tensor:
    """A (len(rows), width) long tensor of ``rows``, each filled up to ``width`` (default: the
    longest row) with ``fill``."""
    width = max((len(row) for row in rows), default=0) if width is None else width
    return torch.tensor([list(row) + [fill] * (width - len(row)) for row in rows], dtype=torch.long)


class InputPadder:
    """Dynamic padding of text features: their ``MODEL_INPUTS`` and the ``extra`` keys (e.g. the
    labels), padded to the batch's longest feature as the tokenizer pads (side, id); any other
    key of a feature is left out. A task's ``collate`` can be this, or start from it."""

    def __init__(self, tokenizer: Any, extra: Sequence[str] = ("labels",)) -> None:
        from transformers import DataCollatorWithPadding

        self.keys = (*MODEL_INPUTS, *extra)
        self._collator = DataCollatorWithPadding(tokenizer)
        # The features are token ids already, so the tokenizer's hint to pad while encoding
        # instead does not apply.
        tokenizer.deprecation_warnings["Asking-to-pad-a-fast-tokenizer"] = True

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self._collator([{k: f[k] for k in self.keys if k in f} for f in features]))
