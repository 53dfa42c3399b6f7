"""``pair-classification``: two texts encoded as one sequence, ``first [SEP] second``.

Natural language inference (entailment), paraphrase detection, question-answer matching.
Token type ids mark the two segments where the encoder has them; when the pair is longer than
``max_length`` the longer text is truncated first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from finetune_kit.task import TaskError
from finetune_kit_tasks.text_classification import TextClassificationTask


class PairClassificationTask(TextClassificationTask):
    name: ClassVar[str] = "pair-classification"
    description: ClassVar[str] = "Sentence-pair classification (first [SEP] second), e.g. NLI entailment, paraphrase"

    def text_columns(self) -> list[str]:
        return [self.settings.text_column, self.settings.text_pair_column]

    def tokenize(self, batch: dict[str, list]) -> dict[str, list]:
        return self.tokenizer(
            batch[self.settings.text_column],
            batch[self.settings.text_pair_column],
            truncation="longest_first",
            max_length=self.settings.max_length,
        )

    def to_examples(self, inputs: Iterable[Any]) -> list[dict[str, Any]]:
        rows = []
        for item in inputs:
            if isinstance(item, dict):
                rows.append(dict(item))
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                rows.append({self.settings.text_column: item[0], self.settings.text_pair_column: item[1]})
            else:
                raise TaskError(f"{self.name} predicts from (text, text_pair) pairs or dicts, not {item!r:.60}")
        return rows
