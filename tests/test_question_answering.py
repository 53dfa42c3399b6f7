"""Extractive QA on hand-written cases and tiny encoders: windows, offsets, metric, threshold."""

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from finetune_kit_tasks.question_answering import QuestionAnsweringTask
from typer.testing import CliRunner

import finetune_kit as fk
from finetune_kit.api import task_settings
from finetune_kit.cli import app
from finetune_kit.data import read_file
from finetune_kit.metrics import (
    answer_f1,
    answer_scores,
    normalize_answer,
    squad_metrics,
    tune_null_threshold,
)
from finetune_kit.modeling import load_tokenizer
from finetune_kit.report_markdown import blocks_markdown
from finetune_kit.task import DataError, TaskError
from finetune_kit.inference import prepare_features

LETTERS = "a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3".split()  # one token each


def make_task(tokenizer, raw: Dataset, **options) -> QuestionAnsweringTask:
    max_length = options.pop("max_length", 16)
    task = QuestionAnsweringTask(task_settings({"max_length": max_length, "task_options": options},
                                               QuestionAnsweringTask))
    task.setup(DatasetDict(train=raw), tokenizer, {"train": "mem"})
    return task


def fake_outputs(features, picks: dict[int, tuple[int, int]], width: int = 16):
    """Logits that pick (start, end) token positions in the given features, CLS elsewhere."""
    start = np.full((len(features), width), -5.0, dtype=np.float32)
    end = np.full((len(features), width), -5.0, dtype=np.float32)
    start[:, 0] = end[:, 0] = 0.0
    for f, (s, e) in picks.items():
        start[f, s] = end[f, e] = 10.0
    return iter([(np.arange(len(features)), {"start_logits": start, "end_logits": end})])


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    return load_tokenizer(tiny_encoder)


def test_windows_with_stride_and_an_answer_across_a_window_boundary(tokenizer):
    """30 one-token context words; [CLS] what [SEP] ... [SEP] leaves 12 context tokens a window;
    windows share 4 tokens, so they start at words 0, 8, 16, 24. The answer, words 10-13
    ("k l m n"), crosses the end of the first window and lies wholly in the second."""
    context = " ".join(LETTERS)
    start = context.index("k l m n")
    raw = Dataset.from_list([{"id": "q1", "question": "what", "context": context,
                              "answers": {"text": ["k l m n"], "answer_start": [start]}}])
    task = make_task(tokenizer, raw, doc_stride=4, max_query_length=4)
    features = prepare_features(task, raw, "train")
    first_words = [next(o[0] for o in f["offsets"] if o[0] >= 0) for f in features]
    assert first_words == [context.index(w) for w in ("a", "i", "q", "y")]
    # the first window holds k and l but not m, n: it is trained to point at [CLS]
    assert (features[0]["start_positions"], features[0]["end_positions"]) == (0, 0)
    # the second window: [CLS] what [SEP] i j k l m n ... -> k, n at positions 5 and 8
    assert (features[1]["start_positions"], features[1]["end_positions"]) == (5, 8)
    tokens = tokenizer.convert_ids_to_tokens(features[1]["input_ids"])
    assert tokens[5:9] == ["k", "l", "m", "n"]
    assert list(zip(features["start_positions"][2:], features["end_positions"][2:])) == [(0, 0), (0, 0)]
    # decoding: the span found in the second window maps back to the exact characters
    predicted = task.postprocess(raw, prepare_features(task, raw, "predict"), fake_outputs(features, {1: (5, 8)}))
    assert predicted[0]["answer"] == "k l m n"
    assert (predicted[0]["start"], predicted[0]["end"]) == (start, start + len("k l m n"))


def test_offsets_map_back_to_characters_with_accents_and_extra_spaces(tokenizer):
    context = "Le  café   à Montréal,  naïve  résumé ünï !"
    answer = "naïve  résumé"
    raw = Dataset.from_list([{"id": "q", "question": "what", "context": context,
                              "answers": {"text": [answer], "answer_start": [context.index(answer)]}}])
    task = make_task(tokenizer, raw, max_length=64)
    [feature] = prepare_features(task, raw, "train")
    s, e = feature["start_positions"], feature["end_positions"]
    # the token span the answer was found at decodes back to exactly the answer's characters
    [predicted] = task.postprocess(raw, prepare_features(task, raw, "predict"),
                                   fake_outputs([feature], {0: (s, e)}, width=len(feature["input_ids"])))
    assert predicted["answer"] == answer
    assert context[predicted["start"] : predicted["end"]] == answer
    assert [c["text"] for c in predicted["nbest"]][0] == answer
    # and a span inside a word with accents is a substring too
    montreal = context.index("Montréal")
    raw2 = Dataset.from_list([{"id": "q", "question": "what", "context": context,
                               "answers": {"text": ["Montréal"], "answer_start": [montreal]}}])
    [feature2] = prepare_features(task, raw2, "train")
    [predicted2] = task.postprocess(raw2, prepare_features(task, raw2, "predict"), fake_outputs(
        [feature2], {0: (feature2["start_positions"], feature2["end_positions"])}, width=len(feature2["input_ids"])))
    assert predicted2["answer"] == "Montréal"


def test_answers_never_leave_the_context(tokenizer):
    """The best raw scores sit on the question and on [SEP]: only context spans are answers."""
    context = "the cat sat on the mat"
    raw = Dataset.from_list([{"id": "q", "question": "who sat", "context": context,
                              "answers": {"text": ["cat"], "answer_start": [4]}}])
    task = make_task(tokenizer, raw, max_length=32)
    features = prepare_features(task, raw, "predict")
    width = len(features[0]["input_ids"])
    start = np.zeros((1, width), dtype=np.float32)
    end = np.zeros((1, width), dtype=np.float32)
    start[0, 1] = end[0, 2] = 50.0  # "who sat", the question
    start[0, 5] = end[0, 5] = 5.0  # "cat"
    end[0, width - 1] = 60.0  # the final [SEP]
    [predicted] = task.postprocess(raw, features, iter([(np.arange(1), {"start_logits": start, "end_logits": end})]))
    assert predicted["answer"] == "cat"
    assert all(c["start"] >= 0 and context[c["start"]:c["end"]] == c["text"] for c in predicted["nbest"])


def test_squad_normalisation_and_max_over_golds():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    # "cat sat on mat" vs "cat on mat": 3 tokens in common, P = 3/4, R = 1, F1 = 6/7
    assert answer_f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    assert answer_scores("Denver Broncos", ["Broncos", "the Denver Broncos", "Denver"]) == (1.0, 1.0)
    assert answer_scores("Denver", ["Broncos", "Denver Broncos"]) == (0.0, pytest.approx(2 / 3))
    assert answer_scores("Carolina", ["Broncos"]) == (0.0, 0.0)
    # unanswerable: only the empty prediction is right
    assert answer_scores("", []) == (1.0, 1.0)
    assert answer_scores("France", []) == (0.0, 0.0)
    assert answer_scores("", ["France"]) == (0.0, 0.0)
    metrics = squad_metrics(["Denver", "", "", "x"], [["Denver Broncos"], ["France"], [], []])
    # F1s: 2/3, 0, 1, 0 -> mean 5/12; EM: 0, 0, 1, 0
    assert metrics["f1"] == pytest.approx(5 / 12) and metrics["exact_match"] == 0.25
    assert (metrics["HasAns_f1"], metrics["NoAns_f1"]) == (pytest.approx(1 / 3), 0.5)
    assert (metrics["HasAns_total"], metrics["NoAns_total"]) == (2, 2)


def test_threshold_tuning_on_a_constructed_table():
    diffs = [-3.0, -1.0, 0.5, 2.0, 4.0]
    span_f1 = [1.0, 0.5, 0.0, 1.0, 0.0]
    null_f1 = [0.0, 0.0, 1.0, 0.0, 1.0]
    # answering the k smallest: k=0 -> 2/5, 1 -> 3/5, 2 -> 3.5/5, 3 -> 2.5/5, 4 -> 3.5/5, 5 -> 2.5/5;
    # k=2 (threshold between -1 and 0.5) and k=4 (between 2 and 4) tie: the one nearer 0 wins
    assert tune_null_threshold(diffs, span_f1, null_f1) == (pytest.approx(-0.25), pytest.approx(0.7))
    # all answerable and right: answer everything, 1 beyond the largest difference
    assert tune_null_threshold([0.0, 1.0], [1.0, 1.0], [0.0, 0.0]) == (2.0, 1.0)


# -- training on tiny encoders -----------------------------------------------------------------

ANIMALS = ["cat", "dog"]
PLACES = ["park", "mat"]


def toy_squad(unanswerable: bool = False) -> dict:
    """Who/where questions over short contexts; with ``unanswerable``, some questions ask for
    something the context does not hold (SQuAD v2.0)."""
    paragraphs = []
    for i, (animal, place) in enumerate([(a, p) for a in ANIMALS for p in PLACES] * 3):
        context = f"the {animal} sat on the {place} ."
        qas = [{"id": f"w{i}", "question": "who sat", "answers": [{"text": animal, "answer_start": 4}]},
               {"id": f"p{i}", "question": "where",
                "answers": [{"text": place, "answer_start": context.index(place, 8)}]}]
        if unanswerable:
            qas.append({"id": f"n{i}", "question": "what music", "answers": [], "is_impossible": True,
                        "plausible_answers": [{"text": animal, "answer_start": 4}]})
        paragraphs.append({"context": context, "qas": qas})
    return {"version": "v2.0" if unanswerable else "1.1", "data": [{"title": "toy", "paragraphs": paragraphs}]}


def write_squad(path: Path, document: dict) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_learns_toy_squad_and_round_trips(tiny_encoder, tmp_path):
    data = write_squad(tmp_path / "toy.json", toy_squad())
    result = fk.train(task="question-answering", model=tiny_encoder, train_file=str(data), validation_file=str(data),
                      output_dir=str(tmp_path / "m"), epochs=30, learning_rate=5e-3, batch_size=8, max_length=32)
    validation = result.metrics["validation"]
    assert validation["exact_match"] == 1.0 and validation["f1"] == 1.0
    assert validation["num_questions"] == 24 and validation["squad_rules"] == "v1.1"
    predictor = fk.load(tmp_path / "m")
    assert predictor.task.settings.max_length == 32
    [out] = predictor.predict([{"question": "where", "context": "the dog sat on the park ."}])
    assert out["answer"] == "park" and out["nbest"][0]["text"] == "park"
    assert sum(c["probability"] for c in out["nbest"]) == pytest.approx(1.0, abs=1e-6)
    evaluated = fk.evaluate(tmp_path / "m", data, tmp_path / "eval")
    assert evaluated.pop("loss") == pytest.approx(validation.pop("loss"), abs=1e-5)
    assert evaluated == validation
    # a model that always answers writes no null odds
    written = predictor.task.write_predictions(predictor.predict_file(data), tmp_path / "p.json")
    assert written == [tmp_path / "p.json", tmp_path / "p.nbest.jsonl"]
    assert not (tmp_path / "p.null_odds.json").exists()


def test_v2_threshold_is_tuned_saved_and_used(tiny_encoder, tmp_path):
    data = write_squad(tmp_path / "toy2.json", toy_squad(unanswerable=True))
    result = fk.train(task="question-answering", model=tiny_encoder, train_file=str(data), validation_file=str(data),
                      output_dir=str(tmp_path / "m"), max_steps=3, batch_size=8, max_length=32)
    validation = result.metrics["validation"]
    state = json.loads((tmp_path / "m" / "finetune_kit.json").read_text())["task_state"]
    assert state["with_negatives"] is True
    assert state["no_answer_threshold"] == validation["no_answer_threshold"]
    # the tuned threshold is the best one on this validation set, and no worse than 0
    assert validation["f1"] == pytest.approx(validation["best_f1"])
    assert validation["f1"] >= validation["at_threshold_0"]["f1"]
    assert {"HasAns_f1", "NoAns_f1", "HasAns_total", "NoAns_total"} <= set(validation)
    assert (validation["HasAns_total"], validation["NoAns_total"]) == (24, 12)
    assert validation["squad_rules"] == "v2.0"
    # predict applies the saved threshold: an answer is "" exactly when its null margin exceeds it
    predictor = fk.load(tmp_path / "m")
    for out in predictor.predict([("what music", "the cat sat on the mat ."), ("who sat", "the dog sat on the park .")]):
        expected = "" if out["null_score_diff"] > state["no_answer_threshold"] else out["best_span"]
        assert out["answer"] == expected
    report = (tmp_path / "m" / "report.md").read_text()
    assert "tuned on validation, saved" in report and "NoAns F1" in report
    assert "Scored by the official SQuAD v2.0 rules." in report


def test_cli_predict_writes_the_official_format_and_nbest(tiny_encoder, tmp_path):
    data = write_squad(tmp_path / "toy.json", toy_squad(unanswerable=True))
    fk.train(task="question-answering", model=tiny_encoder, train_file=str(data), output_dir=str(tmp_path / "m"),
             max_steps=1, max_length=32)
    out = tmp_path / "predictions.json"
    done = CliRunner().invoke(app, ["predict", str(tmp_path / "m"), "--input", str(data), "--output", str(out)])
    assert done.exit_code == 0, done.output
    official = json.loads(out.read_text())
    assert len(official) == 36 and all(isinstance(v, str) for v in official.values())
    nbest = [json.loads(line) for line in (tmp_path / "predictions.nbest.jsonl").read_text().splitlines()]
    assert [n["id"] for n in nbest] == list(official)
    assert all(any(c["text"] == "" for c in n["nbest"]) for n in nbest)  # v2.0: the null answer is listed
    assert list(json.loads((tmp_path / "predictions.null_odds.json").read_text())) == list(official)
    assert "predictions.null_odds.json" in done.output


def test_bad_answer_names_the_question_or_is_skipped_and_counted(tiny_encoder, tmp_path):
    document = toy_squad()
    document["data"][0]["paragraphs"][1]["qas"][0]["answers"][0]["answer_start"] = 5
    data = write_squad(tmp_path / "bad.json", document)
    with pytest.raises(DataError, match=r"bad.json item 3 \(question w1\): answer 'cat' does not match the context "
                                        r"at 5 \(the context has 'at ' there\)"):
        fk.train(task="question-answering", model=tiny_encoder, train_file=str(data), output_dir=str(tmp_path / "m"),
                 max_steps=1)
    assert not (tmp_path / "m").exists()
    result = fk.train(task="question-answering", model=tiny_encoder, train_file=str(data), validation_file=str(data),
                      output_dir=str(tmp_path / "m"), max_steps=1, max_length=32,
                      task_options={"skip_bad_answers": True})
    assert result.metrics["validation"]["answers_not_matching_context"] == 1
    state = json.loads((tmp_path / "m" / "finetune_kit.json").read_text())["task_state"]
    assert state["skipped_answers"] == {str(data): 1}


def test_other_bad_input(tiny_encoder, tmp_path):
    document = toy_squad()
    document["data"][0]["paragraphs"][0]["qas"][1]["id"] = "w0"
    data = write_squad(tmp_path / "dup.json", document)
    with pytest.raises(DataError, match=r"dup.json item 2 \(question w0\): question id 'w0' appears twice"):
        fk.train(task="question-answering", model=tiny_encoder, train_file=str(data), output_dir=str(tmp_path / "m"))
    with pytest.raises(TaskError, match=r"doc_stride: 104 is not allowed; it must be smaller than the context room "
                                        r"of a window \(104 tokens: max_length 128 minus max_query_length 21"):
        fk.train(task="question-answering", model=tiny_encoder, train_file=str(data), output_dir=str(tmp_path / "m"),
                 max_length=128, task_options={"doc_stride": 104})
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text(json.dumps({"id": "1", "question": "who", "context": "the cat",
                                 "answers": {"text": ["cat"], "answer_start": [4, 5]}}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"q.jsonl line 1 \(question 1\): column 'answers' must be"):
        fk.train(task="question-answering", model=tiny_encoder, train_file=str(jsonl), output_dir=str(tmp_path / "m"))


def test_default_max_length_is_the_tasks():
    assert task_settings({}, QuestionAnsweringTask).max_length == 384
    from finetune_kit_tasks.text_classification import TextClassificationTask

    assert task_settings({}, TextClassificationTask).max_length == 128
    assert task_settings({"max_length": 256}, QuestionAnsweringTask).max_length == 256


# -- scoring rules by SQuAD version, is_impossible, null odds ---------------------------------------

def squad_file(path: Path, version: str | None, qas: list[dict], context: str = "the cat sat on the mat .") -> Path:
    document = {"data": [{"title": "toy", "paragraphs": [{"context": context, "qas": qas}]}]}
    if version is not None:
        document["version"] = version
    return write_squad(path, document)


def predict_the_full_stop(task: QuestionAnsweringTask, raw: Dataset) -> list[dict]:
    """Every question answered with the context's final "." (its span scores 20, [CLS] 0)."""
    features = prepare_features(task, raw, "predict")
    dot = [next(i for i, o in enumerate(f["offsets"]) if o[0] == 23) for f in features]
    return task.postprocess(raw, features, fake_outputs(features, dict(enumerate(zip(dot, dot)))))


def test_scoring_rules_follow_the_squad_version(tokenizer, tmp_path):
    """Golds "mat" and "." (three SQuAD v1.1 dev questions have a gold "."), prediction ".": the
    v1.1 script keeps every gold, so "." matches exactly (EM 1; F1 0: two empty token lists share
    no token); the v2.0 script drops golds that normalise to nothing and compares with "mat"
    alone (EM 0, F1 0). Without a stated version: v2.0 when questions may have no answer."""
    where = {"id": "q", "question": "where", "answers": [{"text": "mat", "answer_start": 19},
                                                       {"text": ".", "answer_start": 23}]}
    scores = {}
    for version in ("1.1", "v2.0", None):
        raw = read_file(squad_file(tmp_path / f"{version}.json", version, [where]))
        task = make_task(tokenizer, raw)
        [prediction] = predict_the_full_stop(task, raw)
        assert prediction["answer"] == "."
        metrics = task.compute_metrics([prediction], raw)
        scores[version] = (metrics["squad_rules"], metrics["exact_match"], metrics["f1"])
    assert scores == {"1.1": ("v1.1", 1.0, 0.0), "v2.0": ("v2.0", 0.0, 0.0), None: ("v1.1", 1.0, 0.0)}
    # no version, but a model trained with unanswerable questions: v2.0
    raw = read_file(squad_file(tmp_path / "plain.json", None, [where]))
    task = make_task(tokenizer, raw, with_negatives=True)
    assert task.compute_metrics(predict_the_full_stop(task, raw), raw)["squad_rules"] == "v2.0"
    # no version, a question without answers in the data: v2.0, where "." is right for it
    # ("." normalises to nothing, as the empty answer does): EM and F1 (0 + 1) / 2
    music = {"id": "n", "question": "what music", "answers": []}
    raw = read_file(squad_file(tmp_path / "mixed.json", None, [where, music]))
    task = make_task(tokenizer, raw)
    predictions = predict_the_full_stop(task, raw)
    metrics = task.compute_metrics(predictions, raw)
    assert (metrics["squad_rules"], metrics["exact_match"], metrics["f1"], metrics["NoAns_total"]) == ("v2.0", 0.5,
                                                                                                       0.5, 1)
    summary = "\n".join(blocks_markdown(task.report(predictions, raw, metrics).summary, with_plots=False))
    assert "Scored by the official SQuAD v2.0 rules." in summary


def test_is_impossible_must_agree_with_the_answers(tiny_encoder, tmp_path):
    cat = [{"text": "cat", "answer_start": 4}]
    answered = {"id": "w", "question": "who sat", "answers": cat, "is_impossible": False}
    cases = {
        "both.json": ({"id": "n0", "question": "what music", "is_impossible": True, "answers": cat},
                      r'both.json: data\[0\]\.paragraphs\[0\]\.qas\[1\] \(question n0\): is_impossible is true but it '
                      r'has 1 answer\(s\); give it "answers": \[\] \(plausible answers go in "plausible_answers"\) '
                      r"or set is_impossible to false$"),
        "neither.json": ({"id": "n1", "question": "what music", "is_impossible": False, "answers": []},
                         r"neither.json: data\[0\]\.paragraphs\[0\]\.qas\[1\] \(question n1\): is_impossible is false "
                         r"but it has no answers; give its answers or set is_impossible to true$"),
        "flag.json": ({"id": "n2", "question": "what music", "is_impossible": "yes", "answers": []},
                      r"flag.json: data\[0\]\.paragraphs\[0\]\.qas\[1\] \(question n2\): is_impossible is 'yes'; "
                      r"give true or false$"),
    }
    for name, (question, message) in cases.items():
        data = squad_file(tmp_path / name, "v2.0", [answered, question])
        with pytest.raises(DataError, match=message):
            fk.train(task="question-answering", model=tiny_encoder, train_file=str(data),
                     output_dir=str(tmp_path / "m"), max_steps=1)
        assert not (tmp_path / "m").exists()
    # agreeing questions read as before: an unanswerable one has no answers; a question without
    # the flag (a v1.1 article joined to v2.0 ones) keeps its answers
    unanswerable = {"id": "n", "question": "what music", "is_impossible": True, "answers": [],
                    "plausible_answers": cat}
    raw = read_file(squad_file(tmp_path / "good.json", "v2.0", [answered, unanswerable,
                                                                  {"id": "u", "question": "who", "answers": cat}]))
    assert [a["text"] for a in raw["answers"]] == [["cat"], [], ["cat"]]
    assert raw["squad_version"] == ["v2.0"] * 3


def test_a_v11_file_has_an_answer_for_every_labelled_question(tiny_encoder, tokenizer, tmp_path):
    answered = {"id": "w", "question": "who sat", "answers": [{"text": "cat", "answer_start": 4}]}
    data = squad_file(tmp_path / "v11.json", "1.1", [answered, {"id": "n", "question": "what music", "answers": []}])
    with pytest.raises(DataError, match=r'v11.json item 2 \(question n\): no answer, but the file states SQuAD '
                                        r'version 1.1, where every question has one; give its answers, or state '
                                        r'"version": "v2.0" if questions may have none$'):
        fk.train(task="question-answering", model=tiny_encoder, train_file=str(data), output_dir=str(tmp_path / "m"),
                 max_steps=1)
    assert not (tmp_path / "m").exists()
    # questions to predict for need none
    task = make_task(tokenizer, Dataset.from_list([{"id": "w", "question": "who sat", "context": "the cat sat",
                                                    "answers": {"text": ["cat"], "answer_start": [4]}}]))
    task.validate(read_file(data), "predict", str(data))


def test_null_odds_let_the_official_v2_script_make_our_decisions(tiny_encoder, tmp_path):
    """predictions.null_odds.json holds, per question, null score - best span score (checked
    against the n-best list); the official script's rule, no answer when that exceeds
    --na-prob-thresh, given the saved threshold, gives back exactly our answers."""
    data = write_squad(tmp_path / "toy2.json", toy_squad(unanswerable=True))
    fk.train(task="question-answering", model=tiny_encoder, train_file=str(data), output_dir=str(tmp_path / "m"),
             max_steps=1, max_length=32)
    predictor = fk.load(tmp_path / "m")
    differences = sorted(p["null_score_diff"] for p in predictor.predict_file(data))
    predictor.task.threshold = differences[len(differences) // 2]  # some questions answered, some not
    written = predictor.task.write_predictions(predictor.predict_file(data), tmp_path / "predictions.json")
    assert written == [tmp_path / "predictions.json", tmp_path / "predictions.nbest.jsonl",
                       tmp_path / "predictions.null_odds.json"]
    answers, odds = json.loads(written[0].read_text()), json.loads(written[2].read_text())
    nbest = {n["id"]: n["nbest"] for n in map(json.loads, written[1].read_text().splitlines())}
    assert list(odds) == list(answers) and len(answers) == 36
    for question_id, answer in answers.items():
        null = next(c["score"] for c in nbest[question_id] if c["start"] < 0)
        best = max((c for c in nbest[question_id] if c["start"] >= 0), key=lambda c: c["score"])
        assert odds[question_id] == null - best["score"]
        assert answer == ("" if odds[question_id] > predictor.task.threshold else best["text"])
    assert 0 < sum(answer == "" for answer in answers.values()) < len(answers)
