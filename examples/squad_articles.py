"""Cut and join SQuAD files by article: the splits the README's QA results use.

    python examples/squad_articles.py OUTPUT.json FILE:FIRST-LAST [FILE:FIRST-LAST ...]

Articles are numbered from 1 in each file's order, ranges are inclusive, and the output is a
SQuAD JSON file with the chosen articles in the order given ("version" v2.0 when any input is).
For example, SQuAD v1.1 dev split into 38 articles to train on and 10 to evaluate on:

    python examples/squad_articles.py runs/squad/train.json ../shared/data/squad_v1.1/dev-v1.1.json:1-38
    python examples/squad_articles.py runs/squad/eval.json ../shared/data/squad_v1.1/dev-v1.1.json:39-48
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path


def parse_spec(spec: str) -> tuple[Path, int, int]:
    path, _, span = spec.rpartition(":")
    if not path or "-" not in span:
        raise SystemExit(f"{spec!r}: expected FILE:FIRST-LAST, e.g. dev-v1.1.json:1-38")
    first, last = (int(x) for x in span.split("-", 1))
    return Path(path), first, last


def select_articles(specs: list[str]) -> dict:
    """A SQuAD document holding the articles the specs name."""
    articles, version = [], "1.1"
    for spec in specs:
        path, first, last = parse_spec(spec)
        document = json.loads(path.read_text(encoding="utf-8"))
        data = document["data"]
        if not 1 <= first <= last <= len(data):
            raise SystemExit(f"{spec!r}: {path} has articles 1-{len(data)}")
        articles.extend(data[first - 1 : last])
        if str(document.get("version", "")).lstrip("v").startswith("2"):
            version = "v2.0"
    return {"version": version, "data": articles}


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    output = Path(argv[0])
    document = select_articles(argv[1:])
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle, ensure_ascii=False)
    os.replace(tmp, output)
    questions = sum(len(p["qas"]) for a in document["data"] for p in a["paragraphs"])
    print(f"{output}: {len(document['data'])} articles, {questions} questions")


if __name__ == "__main__":
    main(sys.argv[1:])
