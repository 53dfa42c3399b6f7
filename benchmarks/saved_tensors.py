"""What autograd keeps for the backward pass of one training forward, fp32 against bf16 autocast.

Counts every tensor the forward pass saves for the backward pass (``saved_tensors_hooks``), once
per storage, leaving out the parameters themselves (their storage exists either way), and sorts
them into activations by dtype, dropout masks (bool) and copies of parameters (autocast's bf16
casts of the weights, made once per forward). The model is the packaged encoder with a
sequence-classification head in training mode (dropout on), fed a batch of random tokens with
no padding, with finetune-kit's dropout masks (``--dropout-masks torch`` for torch's).

    python benchmarks/saved_tensors.py                           # batch 16 x 128 tokens (RTE-sized)
    python benchmarks/saved_tensors.py --batch-size 16 --length 384   # a SQuAD window batch

It measures the step's own memory, not the process's: peak RSS also holds the allocator's
retained and fragmented blocks and oneDNN's kernels and buffers (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, offline, packaged_encoder  # noqa: E402

MIB = 2**20


def is_parameter_copy(tensor: torch.Tensor) -> bool:
    """A tensor made from a parameter by a cast and at most one view (autocast's bf16 copy of a
    weight, transposed for the product)."""
    fn = tensor.grad_fn
    for _ in range(2):
        if fn is None or len(fn.next_functions) != 1:
            return False
        fn = fn.next_functions[0][0]
        if type(fn).__name__ == "AccumulateGrad":
            return True
    return False


def saved_bytes(model, batch: dict, precision: str, dropout_masks: str) -> Counter:
    from finetune_kit.dropout import dropout_masks as masks

    parameter_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    kinds: Counter = Counter()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in seen or key in parameter_storages:
            return tensor
        seen.add(key)
        if tensor.dtype == torch.bool:
            kind = "dropout masks (bool)"
        elif is_parameter_copy(tensor):
            kind = f"parameter copies ({str(tensor.dtype).removeprefix('torch.')})"
        else:
            kind = f"activations ({str(tensor.dtype).removeprefix('torch.')})"
        kinds[kind] += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), masks(dropout_masks), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = model(**batch).loss
    del loss
    return kinds


def main() -> None:
    from finetune_kit.config import DROPOUT_MASKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--dropout-masks", choices=DROPOUT_MASKS, default="fast")
    parser.add_argument("--model", help="encoder directory (default: the packaged MiniLM)")
    ns = parser.parse_args()
    offline()
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(ns.model or packaged_encoder(), num_labels=2)
    model.train()
    batch = {"input_ids": torch.randint(1000, model.config.vocab_size, (ns.batch_size, ns.length)),
             "attention_mask": torch.ones(ns.batch_size, ns.length, dtype=torch.long),
             "labels": torch.zeros(ns.batch_size, dtype=torch.long)}
    print(f"{machine()}; batch {ns.batch_size} x {ns.length} tokens, no padding, {ns.dropout_masks} dropout masks")
    measured = {precision: saved_bytes(model, batch, precision, ns.dropout_masks) for precision in ("fp32", "bf16")}
    kinds = sorted(set(measured["fp32"]) | set(measured["bf16"]))
    print(f"\n{'saved for backward, MiB':<34}{'fp32':>10}{'bf16':>10}")
    for kind in kinds:
        print(f"{kind:<34}{measured['fp32'][kind] / MIB:>10.1f}{measured['bf16'][kind] / MIB:>10.1f}")
    totals = {precision: sum(kinds.values()) / MIB for precision, kinds in measured.items()}
    print(f"{'total':<34}{totals['fp32']:>10.1f}{totals['bf16']:>10.1f}   bf16 / fp32 {totals['bf16'] / totals['fp32']:.2f}")


if __name__ == "__main__":
    main()
