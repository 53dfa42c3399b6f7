"""Write span-annotated data (GENIA's JSON, or span-ner JSON Lines) as a CoNLL BIO file, so the
same data trains token-classification too. BIO cannot hold nested entities: each sentence keeps
its outermost ones (those no other entity contains).

    python examples/spans_to_conll.py ../shared/data/genia_nested/dev.json runs/genia/dev.conll
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from finetune_kit.data import iter_rows, read_file, where
from finetune_kit.spans import layout_of, outermost, read_spans
from finetune_kit.tagging import from_spans


def convert(source: Path, output: Path) -> tuple[int, int, int]:
    """Write ``output``; returns (sentences, entities, entities dropped as nested)."""
    raw = read_file(source)
    tokens_col = "sentence" if "sentence" in raw.column_names else "tokens"
    spans_col = next(c for c in ("ner", "spans", "tags") if c in raw.column_names)
    layout = layout_of(raw[spans_col])
    lines, total, dropped = [], 0, 0
    for row in iter_rows(raw, [tokens_col, spans_col]):
        tokens = row[tokens_col]
        entities = read_spans(row[spans_col], len(tokens), layout, where(str(source), row))
        kept = outermost(entities)
        total += len(entities)
        dropped += len(entities) - len(kept)
        lines.append("".join(f"{t}\t{tag}\n" for t, tag in zip(tokens, from_spans(len(tokens), kept, "IOB2"))))
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    os.replace(tmp, output)
    return len(lines), total, dropped


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    sentences, entities, dropped = convert(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{sys.argv[2]}: {sentences} sentences, {entities - dropped} of {entities} entities "
          f"({dropped} nested ones left out)")
