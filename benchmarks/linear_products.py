"""How fast the encoder's own linear products run at the shapes training gives them.

MFU is measured against a square 2048 x 2048 x 2048 product; an encoder layer's products are
thin: a batch's tokens (a few hundred to a few thousand rows) against 384 x 384 and 384 x 1536
weights. This times one encoder layer's six linear layers (query, key, value, attention output,
intermediate, output) forward and backward through autograd, with nothing else in between: the
forward's ``addmm`` and the backward's two ``mm`` per layer (input gradient, weight gradient),
the products a profile of a training step shows as the linear layers. Their GFLOP/s over the
square peak, measured in the same process, is the MFU a step would reach if it were nothing but
these products: a ceiling for the linear layers' share of a step.

bf16 runs the products on bf16 weights and inputs (autocast's casts are not in the timing).

    python benchmarks/linear_products.py
    python benchmarks/linear_products.py --tokens 2750 --hidden 384 --intermediate 1536
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PRECISIONS, machine, matmul_peaks  # noqa: E402


def layer_shapes(hidden: int, intermediate: int) -> list[tuple[int, int]]:
    """(in, out) of one BERT layer's linear layers: query, key, value, attention output,
    intermediate, output."""
    return [(hidden, hidden)] * 4 + [(hidden, intermediate), (intermediate, hidden)]


def layer_training_flops(tokens: int, shapes: list[tuple[int, int]]) -> int:
    """Forward (one product) and backward (two) FLOPs of the linear layers: 6 x tokens x in x out."""
    return sum(6 * tokens * n_in * n_out for n_in, n_out in shapes)


def products_gflops(tokens: int, shapes: list[tuple[int, int]], dtype, repeats: int = 10,
                    warmup: int = 3) -> float:
    """GFLOP/s of the layer's linear products forward and backward, best of ``repeats``."""
    import torch

    generator = torch.Generator().manual_seed(0)
    layers = [torch.nn.Linear(n_in, n_out).to(dtype) for n_in, n_out in shapes]
    inputs = [torch.randn(tokens, n_in, generator=generator).to(dtype).requires_grad_() for n_in, _ in shapes]
    grads = [torch.randn(tokens, n_out, generator=generator).to(dtype) for _, n_out in shapes]

    def step() -> None:
        for layer, x, g in zip(layers, inputs, grads):
            layer(x).backward(g)

    for _ in range(warmup):
        step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return layer_training_flops(tokens, shapes) / best / 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 512, 1024, 2048, 2750, 4096, 6144],
                        help="rows of the products: a batch's tokens")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)

    import torch

    print(machine())
    peaks = matmul_peaks()
    shapes = layer_shapes(args.hidden, args.intermediate)
    print("square 2048 product peaks: " + ", ".join(f"{label} {value:.1f} GFLOP/s" for label, value in peaks.items()))
    print("| batch tokens | " + " | ".join(f"{label} GFLOP/s | {label} / peak" for _, label in PRECISIONS.values()) + " |")
    print("|---" * (1 + 2 * len(PRECISIONS)) + "|")
    for tokens in args.tokens:
        cells = []
        for dtype_name, label in PRECISIONS.values():
            rate = products_gflops(tokens, shapes, getattr(torch, dtype_name), args.repeats)
            cells += [f"{rate:.1f}", f"{rate / peaks[label]:.0%}"]
        print(f"| {tokens} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
