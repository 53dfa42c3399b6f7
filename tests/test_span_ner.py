"""Span-based NER: enumeration, the attentive summary, decoding, calibration, metrics, training."""

import json

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from finetune_kit_tasks.span_ner import SpanClassifier, SpanNerTask, span_owners

import finetune_kit as fk
from finetune_kit.api import task_settings
from finetune_kit.data import read_file
from finetune_kit.metrics import span_metrics
from finetune_kit.modeling import load_tokenizer
from finetune_kit.spans import calibrate_threshold, candidate_spans, decode, f1_by_threshold, prf, span_counts
from finetune_kit.task import DataError, TaskError
from finetune_kit.inference import prepare_features
from tests.conftest import write_jsonl


def test_candidate_span_counts():
    # n words, widths 1..k: n + (n - 1) + ... + (n - k + 1)
    assert len(candidate_spans(5, 1)) == 5
    assert len(candidate_spans(5, 3)) == 5 + 4 + 3
    assert len(candidate_spans(3, 8)) == 3 + 2 + 1  # no span is longer than the sentence
    assert candidate_spans(3, 2) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]


class FakeEncoder(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.config = type("Config", (), {"hidden_size": hidden, "hidden_dropout_prob": 0.0})()


def test_self_attentive_summary_by_hand():
    model = SpanClassifier(FakeEncoder(2), num_labels=2, max_width=3)
    with torch.no_grad():
        model.span_attention.weight.copy_(torch.tensor([[1.0, 0.0]]))  # score of a word = its first value
        model.span_attention.bias.zero_()
    words = torch.tensor([[[0.0, 1.0], [np.log(3.0), 2.0], [5.0, 3.0], [1.0, 4.0]]], dtype=torch.float32)
    # span (0, 2): scores 0 and log 3 -> weights 1/4, 3/4 -> summary 1/4 h0 + 3/4 h1
    # span (1, 1): one word -> h1; span (2, 4): scores 5 and 1
    summary = model.attention_summary(words, torch.tensor([[0, 1, 2]]), torch.tensor([[2, 1, 2]]))
    w = np.exp(5.0) / (np.exp(5.0) + np.exp(1.0))
    expected = torch.tensor([[[0.75 * np.log(3.0), 0.25 * 1.0 + 0.75 * 2.0],
                              [np.log(3.0), 2.0],
                              [w * 5.0 + (1 - w) * 1.0, w * 3.0 + (1 - w) * 4.0]]], dtype=torch.float32)
    assert torch.allclose(summary, expected, atol=1e-6)


def test_nested_and_flat_decoding():
    scored = [(0, 4, "ORG", 0.9),  # "United Airlines Holding Inc"
              (0, 2, "ORG", 0.8),  # "United Airlines": nested inside, kept in nested mode
              (1, 5, "ORG", 0.7),  # crosses (0, 4): never kept
              (5, 6, "LOC", 0.6),
              (5, 6, "PER", 0.3)]  # under the threshold
    assert decode(scored, 0.5, "nested") == [(0, 2, "ORG", 0.8), (0, 4, "ORG", 0.9), (5, 6, "LOC", 0.6)]
    assert decode(scored, 0.5, "flat") == [(0, 4, "ORG", 0.9), (5, 6, "LOC", 0.6)]
    assert decode(scored, {"ORG": 0.85, "LOC": 0.5}, "nested") == [(0, 4, "ORG", 0.9), (5, 6, "LOC", 0.6)]


def test_threshold_calibration_picks_the_best_f1():
    # sentence 1: gold (0, 1, A); candidates at 0.9 (right) and 0.6 (wrong)
    # sentence 2: gold (0, 2, B); its right candidate scores only 0.4, a wrong one 0.3
    scored = [[(0, 1, "A", 0.9), (2, 3, "A", 0.6)], [(0, 2, "B", 0.4), (3, 4, "B", 0.3)]]
    gold = [[(0, 1, "A")], [(0, 2, "B")]]
    # a span is kept when its probability is above t: t in [0.6, 0.9) keeps 1 right of 1 -> P 1,
    # R 1/2, F1 2/3; [0.4, 0.6): 1 of 2 -> F1 1/2; [0.3, 0.4): 2 of 3 -> F1 4/5; below 0.3: 2 of 4
    # -> F1 2/3. On the grid, 0.3 and 0.35 tie at 4/5: the one nearer 0.5 wins.
    threshold, f1 = calibrate_threshold(scored, gold, grid=[0.1, 0.2, 0.25, 0.3, 0.35, 0.5, 0.7, 0.95])
    assert (threshold, f1) == (0.35, pytest.approx(0.8))
    # one threshold per type: A at 0.7 drops A's mistake (0.6), B at 0.35 keeps B's answer (0.4)
    # and drops its mistake (0.3): both right, nothing wrong -> F1 1
    per_type, f1 = calibrate_threshold(scored, gold, per_label=True, grid=[0.2, 0.35, 0.7, 0.95])
    assert per_type == {"A": 0.7, "B": 0.35} and f1 == 1.0


@pytest.mark.parametrize("mode", ["nested", "flat"])
def test_f1_at_every_threshold_from_one_decoding_matches_decoding_at_each(mode):
    """Random candidates with crossing and nested spans, repeated spans (another window's, with
    another probability or label) and tied probabilities: the F1 at each threshold equals that of
    decoding the candidates at that threshold."""
    rng = np.random.default_rng(7)
    scored, gold = [], []
    for _ in range(60):
        n = int(rng.integers(1, 9))
        spans = [(int(a), int(a) + int(w)) for a, w in zip(rng.integers(0, n, 12), rng.integers(1, 4, 12))]
        sentence = [(a, b, str(rng.choice(["A", "B"])), float(rng.choice([0.3, 0.5, 0.52, rng.random()])))
                    for a, b in spans]
        sentence += [(a, b, label, float(rng.random())) for a, b, label, _ in sentence[:3]]
        scored.append(sentence)
        gold.append({(a, b, label) for a, b, label, _ in sentence if rng.random() < 0.4})
    grid = [round(x, 2) for x in np.arange(0.05, 0.96, 0.01)]
    expected = [prf(*span_counts(gold, [[s[:3] for s in decode(sentence, t, mode)] for sentence in scored]))["f1"]
                for t in grid]
    assert f1_by_threshold(scored, gold, grid, mode) == expected
    assert len(set(expected)) > 10  # the thresholds do decide something here
    threshold, f1 = calibrate_threshold(scored, gold, mode)
    best = max(expected)
    assert f1 == best and threshold == min((t for t, f in zip(grid, expected) if round(f, 12) == round(best, 12)),
                                           key=lambda t: abs(t - 0.5))


def test_span_metrics_count_nested_gold():
    gold = [[(0, 4, "ORG"), (0, 2, "ORG"), (5, 6, "LOC")]]
    predicted = [[(0, 4, "ORG"), (0, 2, "LOC"), (7, 8, "LOC")]]
    metrics = span_metrics(gold, predicted, max_width=3)
    assert (metrics["precision"], metrics["recall"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert metrics["boundary"]["f1"] == pytest.approx(2 / 3)  # (0, 2) is right but for its type
    assert metrics["per_type"]["ORG"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert metrics["num_gold_nested"] == 1 and metrics["num_gold_too_wide"] == 1


def test_span_owners_pick_the_window_with_most_context():
    # 12 one-subword words, windows (0, 8) and (4, 12): a span in the overlap goes to the window
    # where its smaller side of context is larger
    owners = span_owners([1] * 12, [(0, 8), (4, 12)], max_width=2, capacity=8)
    assert owners[(4, 5)] == 0  # context 4 before / 3 after in window 0; 0 / 7 in window 1
    assert owners[(6, 8)] == 1  # window 0: 6 before, 0 after; window 1: 2 / 4
    assert owners[(0, 2)] == 0 and owners[(10, 12)] == 1
    assert set(owners) == {(i, i + v) for i in range(12) for v in (1, 2) if i + v <= 12}


# -- training on tiny encoders -----------------------------------------------------------------

NESTED = [
    ("the old man saw the big dog", [(1, 3, "PER"), (5, 7, "ANI"), (6, 7, "ANI")]),
    ("a dog and a cat", [(1, 2, "ANI"), (4, 5, "ANI")]),
    ("the old woman sat on the mat", [(1, 3, "PER"), (2, 3, "PER")]),
    ("my child love this big cat", [(1, 2, "PER"), (4, 6, "ANI"), (5, 6, "ANI")]),
]


def span_rows(sentences):
    return [{"tokens": text.split(), "spans": [{"start": s, "end": e, "label": label} for s, e, label in spans]}
            for text, spans in sentences]


def test_learns_nested_spans_and_round_trips(tiny_encoder, tmp_path):
    data = write_jsonl(tmp_path / "nested.jsonl", span_rows(NESTED) * 4)
    dev = write_jsonl(tmp_path / "dev.jsonl", span_rows(NESTED))
    result = fk.train(task="span-ner", model=tiny_encoder, train_file=str(data), validation_file=str(dev),
                      output_dir=str(tmp_path / "m"), epochs=30, learning_rate=5e-3, batch_size=8)
    validation = result.metrics["validation"]
    assert validation["f1"] == 1.0, validation
    assert validation["num_gold_nested"] == 3
    predictor = fk.load(tmp_path / "m")
    [out] = predictor.predict(["the old man saw the big dog"])
    assert [(s["start"], s["end"], s["label"], s["text"]) for s in out["spans"]] == [
        (1, 3, "PER", "old man"), (5, 7, "ANI", "big dog"), (6, 7, "ANI", "dog")]
    state = json.loads((tmp_path / "m" / "finetune_kit.json").read_text())["task_state"]
    assert state["types"] == ["ANI", "PER"] and state["threshold"] == validation["threshold"]
    evaluated = fk.evaluate(tmp_path / "m", dev, tmp_path / "eval")
    assert evaluated.pop("loss") == pytest.approx(validation.pop("loss"), abs=1e-5)
    assert evaluated == validation


@pytest.mark.parametrize("options", [{"word_pooling": "mean", "decoding": "flat", "per_type_threshold": True,
                                      "null_weight": 0.5, "null_sample": 0.5}, {"max_span_width": 2}])
def test_other_options_train(tiny_encoder, tmp_path, options):
    data = write_jsonl(tmp_path / "nested.jsonl", span_rows(NESTED))
    result = fk.train(task="span-ner", model=tiny_encoder, train_file=str(data), validation_file=str(data),
                      output_dir=str(tmp_path / "m"), max_steps=2, task_options=options)
    validation = result.metrics["validation"]
    assert validation["decoding"] == options.get("decoding", "nested")
    assert validation["num_gold_too_wide"] == 0  # widths 1-2 only
    if options.get("per_type_threshold"):
        assert set(validation["threshold"]) == {"ANI", "PER"}


def test_genia_and_bio_layouts_are_read(tiny_encoder, tmp_path):
    genia = tmp_path / "genia.json"
    genia.write_text(json.dumps([{"sentence": "the big dog sat".split(),
                                  "ner": [{"index": [1, 2], "type": "ANI"}, {"index": [2], "type": "ANI"}]},
                                 {"sentence": "a man".split(), "ner": [{"index": [1], "type": "PER"}]}]))
    tokenizer = load_tokenizer(tiny_encoder)
    task = SpanNerTask(task_settings({}, SpanNerTask))
    raw = read_file(genia)
    task.setup(DatasetDict(train=raw), tokenizer, {"train": str(genia)})
    assert task.types == ["ANI", "PER"]
    assert task._split_gold(raw, "g") == [[(1, 3, "ANI"), (2, 3, "ANI")], [(1, 2, "PER")]]
    bio = tmp_path / "d.conll"
    bio.write_text("the\tO\nbig\tB-ANI\ndog\tI-ANI\n\na\tO\nman\tB-PER\n", encoding="utf-8")
    raw = read_file(bio)
    task = SpanNerTask(task_settings({}, SpanNerTask))
    task.setup(DatasetDict(train=raw), tokenizer, {"train": str(bio)})
    assert task._split_gold(raw, "b") == [[(1, 3, "ANI")], [(1, 2, "PER")]]


def test_long_sentences_every_span_predicted_once(tiny_encoder):
    words = "a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9".split()
    raw = Dataset.from_list([{"tokens": words, "spans": [{"start": 9, "end": 11, "label": "X"}]}])
    task = SpanNerTask(task_settings({"max_length": 12, "task_options": {"max_span_width": 3, "stride": 4}},
                                     SpanNerTask))
    task.setup(DatasetDict(train=raw), load_tokenizer(tiny_encoder), {"train": "mem"})
    features = prepare_features(task, raw, "train")
    assert len(features) == 6  # windows of 10 words sharing 4, as in test_alignment
    owned = []
    for first, own in zip(features["first_word"], features["own"]):
        owned += [(first + c // 3, first + c // 3 + c % 3 + 1) for c, o in enumerate(own) if o]
    assert sorted(owned) == sorted(candidate_spans(36, 3))  # every candidate exactly once
    # the gold span crossing the first window's edge (words 9-10) is trainable in the second one
    labels = [(first, lab) for first, lab in zip(features["first_word"], features["span_labels"])]
    assert labels[1][1][(9 - 6) * 3 + 1] == 1 and labels[0][1][9 * 3 + 1] == -100


def test_bad_spans_name_file_and_line(tiny_encoder, tmp_path):
    for spans, message in (([{"start": 2, "end": 2, "label": "X"}], r"span 1 \(2, 2\) is empty"),
                           ([{"start": 1, "end": 9, "label": "X"}], r"span 1 \(1, 9\) is outside the sentence's 3"),
                           ([{"start": 0, "end": 1}], r"span 1 \(0, 1\) has no label")):
        data = write_jsonl(tmp_path / "bad.jsonl", [{"tokens": ["a", "b", "c"], "spans": []},
                                                    {"tokens": ["a", "b", "c"], "spans": spans}])
        with pytest.raises(DataError, match=r"bad.jsonl line 2: " + message):
            fk.train(task="span-ner", model=tiny_encoder, train_file=str(data), output_dir=str(tmp_path / "m"))
    data = write_jsonl(tmp_path / "wide.jsonl", span_rows(NESTED))
    with pytest.warns(UserWarning, match=r"wide.jsonl: 4 gold span\(s\) are longer than max_span_width=1"):
        result = fk.train(task="span-ner", model=tiny_encoder, train_file=str(data), validation_file=str(data),
                          output_dir=str(tmp_path / "w"), max_steps=1, task_options={"max_span_width": 1})
    assert result.metrics["validation"]["num_gold_too_wide"] == 4
    with pytest.raises(TaskError, match=r"decoding: 'both' is not allowed"):
        fk.train(task="span-ner", model=tiny_encoder, train_file=str(data), output_dir=str(tmp_path / "x"),
                 task_options={"decoding": "both"})


def test_predict_cli_writes_tokens_and_spans(tiny_encoder, tmp_path):
    from typer.testing import CliRunner

    from finetune_kit.cli import app

    data = write_jsonl(tmp_path / "nested.jsonl", span_rows(NESTED))
    fk.train(task="span-ner", model=tiny_encoder, train_file=str(data), output_dir=str(tmp_path / "m"), max_steps=1)
    out = tmp_path / "pred.jsonl"
    done = CliRunner().invoke(app, ["predict", str(tmp_path / "m"), "--input", str(data), "--output", str(out)])
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["tokens"] for line in lines] == [t.split() for t, _ in NESTED]
    assert all(set(line) == {"tokens", "spans"} for line in lines)
    assert all(set(s) == {"start", "end", "label", "score", "text"} for line in lines for s in line["spans"])


def test_a_duplicated_gold_span_counts_once(tiny_encoder, tmp_path):
    """The same gold span twice in a sentence is one entity: recall, the gold counts and the
    label counts are those of the file without the duplicate, and a warning names the first."""
    rows = span_rows(NESTED)
    clean = write_jsonl(tmp_path / "clean.jsonl", rows)
    rows[2]["spans"].append(dict(rows[2]["spans"][0]))  # (1, 3, PER) of "the old woman sat on the mat"
    doubled = write_jsonl(tmp_path / "doubled.jsonl", rows)
    task = SpanNerTask(task_settings({}, SpanNerTask))
    with pytest.warns(UserWarning, match=r"doubled.jsonl: 1 gold span\(s\) repeat a span of their sentence "
                                         r"\(same start, end and type\) and are counted once \(the first on line 3\)"):
        task.setup(DatasetDict(train=read_file(doubled)), load_tokenizer(tiny_encoder), {"train": str(doubled)})
    assert task.state()["duplicate_gold_spans"] == {str(doubled): 1}
    # predicted: the first gold span of every sentence, 4 of the 10 distinct gold spans
    predictions = [{"tokens": text.split(), "candidates": [(*spans[0], 0.9)]} for text, spans in NESTED]
    for path in (clean, doubled):
        metrics = task.compute_metrics(predictions, read_file(path))
        assert metrics["num_gold"] == 10 and metrics["recall"] == pytest.approx(4 / 10)
        assert task.label_counts(read_file(path)) == {"ANI": 6, "PER": 4}


@pytest.mark.parametrize(("start", "message"), [
    ("0", r'bad.jsonl line 2: spans\[1\].start is "0" \(text\), but spans\[\].start holds a whole number '
          r"elsewhere \(line 1: 0\); write it as a whole number"),
    (1.5, r"bad.jsonl line 2: spans\[1\].start is 1.5 \(a decimal number\), but spans\[\].start holds a whole "
          r"number elsewhere"),
    (True, r"bad.jsonl line 2: spans\[1\].start is true \(true/false\), but spans\[\].start holds a whole number"),
    (-1, r"bad.jsonl line 2: span 2 \(-1, 1\) is outside the sentence's 3 words"),
])
def test_span_positions_that_are_not_whole_numbers_name_the_line_and_span(tiny_encoder, tmp_path, start, message):
    good = {"tokens": ["a", "b", "c"], "spans": [{"start": 0, "end": 1, "label": "X"}]}
    bad = {"tokens": ["a", "b", "c"], "spans": [{"start": 1, "end": 2, "label": "X"},
                                                 {"start": start, "end": 1, "label": "X"}]}
    data = write_jsonl(tmp_path / "bad.jsonl", [good, bad, good])
    with pytest.raises(DataError, match=message):
        fk.train(task="span-ner", model=tiny_encoder, train_file=str(data), output_dir=str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()
    data = write_jsonl(tmp_path / "text.jsonl", [{"tokens": ["a", "b"], "spans": [{"start": "0", "end": "1",
                                                                                   "label": "X"}]}] * 2)
    with pytest.raises(DataError, match=r'text.jsonl line 1: span 1 \(start "0", end "1"\): start and end must be '
                                        r"whole numbers \(word indices, end exclusive\)"):
        fk.train(task="span-ner", model=tiny_encoder, train_file=str(data), output_dir=str(tmp_path / "m"))


def test_tagged_data_keeps_one_scheme(tiny_encoder, tmp_path):
    """BIO-tagged span data: a file of mixed schemes is an error naming the odd line; other
    tagged splits are read in the training data's scheme (or their own after span training)."""
    tokenizer = load_tokenizer(tiny_encoder)
    iob2 = tmp_path / "iob2.conll"
    iob2.write_text("the O\nold B-PER\nman I-PER\n\na O\ndog B-ANI\n", encoding="utf-8")
    mixed = tmp_path / "mixed.conll"  # line 6 is BIOES; "man" I-PER on line 3 ends an entity as IOB2 does
    mixed.write_text("the O\nold B-PER\nman I-PER\n\na O\ndog S-ANI\n\nthe O\ncat B-ANI\n", encoding="utf-8")
    bioes = tmp_path / "bioes.conll"
    bioes.write_text("the O\nold B-PER\nman E-PER\n\na O\ndog S-ANI\n", encoding="utf-8")

    def setup(train, validation=None):
        task = SpanNerTask(task_settings({}, SpanNerTask))
        splits = {"train": read_file(train)} | ({"validation": read_file(validation)} if validation else {})
        task.setup(DatasetDict(splits), tokenizer, {"train": str(train), "validation": str(validation)})
        return task

    with pytest.raises(DataError, match=r"^\S*mixed.conll line 6: tag S-ANI is BIOES, but the file's other tags are "
                                        r"IOB2 \(line 3: I-PER\); fix the tag$"):
        setup(mixed)
    with pytest.raises(DataError, match=r"^\S*iob2.conll line 3: tag I-PER ends an entity, as IOB2 does \(BIOES ends "
                                        r"one with E- or S-\), but the training data's tags are BIOES; write the "
                                        r"file's tags in the same scheme$"):
        setup(bioes, iob2)
    spans = write_jsonl(tmp_path / "spans.jsonl", span_rows(NESTED))
    task = setup(spans, bioes)  # trained on spans: the tags are read in their own scheme
    assert task._split_gold(read_file(bioes), "b") == [[(1, 3, "PER")], [(1, 2, "ANI")]]
