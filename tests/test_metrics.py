import pytest

from finetune_kit.metrics import (
    answer_f1,
    answer_scores,
    classification_metrics,
    squad_metrics,
    squad_rules_of,
)
from tests.conftest import SHARED_DATA


def test_classification_metrics_on_a_hand_computed_case():
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", "c", "c"]
    m = classification_metrics(gold, pred, ["a", "b", "c"])
    # a: P 2/2, R 2/3; b: P 1/2, R 1/2; c: P 1/2, R 1/1
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_label"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8),
                                   "support": 3}
    assert m["per_label"]["b"]["f1"] == pytest.approx(0.5)
    assert m["per_label"]["c"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert m["confusion_matrix"] == {"labels": ["a", "b", "c"], "matrix": [[2, 1, 0], [0, 1, 1], [0, 0, 1]]}


def test_label_never_predicted_has_zero_precision_not_an_error():
    m = classification_metrics(["a", "b"], ["a", "a"], ["a", "b"])
    assert m["per_label"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_squad_rules_of_a_files_version():
    assert [squad_rules_of(v) for v in ("1.1", "v1.1", "2.0", "v2.0", "V2.0")] == ["v1.1", "v1.1", "v2.0", "v2.0",
                                                                                   "v2.0"]
    assert squad_rules_of("draft") is None


def test_squad_v1_rules_keep_every_gold_answer_and_two_empty_answers_share_no_token():
    # a gold "." normalises to nothing: v1.1 keeps it (an empty or "." prediction matches it
    # exactly), v2.0 drops it and compares with "Denver" alone
    assert answer_scores("", ["Denver", "."], rules="v1.1") == (1.0, 0.0)
    assert answer_scores(".", ["Denver", "."], rules="v1.1") == (1.0, 0.0)
    assert answer_scores("", ["Denver", "."], rules="v2.0") == (0.0, 0.0)
    # F1 of two empty token lists: no token in common (v1.1) against "both empty" (v2.0)
    assert answer_f1("", ".", rules="v1.1") == 0.0
    assert answer_f1("", ".", rules="v2.0") == 1.0
    # otherwise the rules agree: "cat sat on mat" vs "cat on mat", P = 3/4, R = 1, F1 = 6/7
    for rules in ("v1.1", "v2.0"):
        assert answer_f1("the cat sat on the mat", "a cat on a mat", rules=rules) == pytest.approx(6 / 7)
    # "Denver" against "Denver Broncos": P = 1, R = 1/2, F1 = 2/3; EM (1 + 0) / 2, F1 (0 + 2/3) / 2
    metrics = squad_metrics(["", "Denver"], [["Denver", "."], ["Denver Broncos"]], rules="v1.1")
    assert metrics == {"exact_match": 0.5, "f1": pytest.approx(1 / 3), "num_questions": 2, "squad_rules": "v1.1"}
    assert squad_metrics(["", "Denver"], [["Denver", "."], ["Denver Broncos"]])["exact_match"] == 0.0


def test_squad_v2_rules_for_unanswerable_questions_are_unchanged():
    # only the empty prediction is right for a question without answers (or with answers that
    # normalise to nothing): EM and F1 1, 0, 1 -> 2/3; the first two have no answer
    metrics = squad_metrics(["", "France", "France"], [[], ["."], ["France"]], rules="v2.0")
    assert (metrics["exact_match"], metrics["f1"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert (metrics["NoAns_exact_match"], metrics["NoAns_total"], metrics["HasAns_f1"]) == (0.5, 2, 1.0)
    assert metrics["squad_rules"] == "v2.0"
    with pytest.raises(ValueError, match="unknown SQuAD rules 'v3'"):
        squad_metrics([""], [[]], rules="v3")


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
def test_squad_v11_dev_is_scored_by_its_own_rules():
    """Three SQuAD v1.1 dev questions have a gold answer "." besides others: the official v1.1
    script matches an empty prediction to it, so answering nothing at all scores EM 3/10570
    there (and F1 0); v2.0's rules, which drop that gold, give EM 0."""
    from finetune_kit.data import read_file

    raw = read_file(SHARED_DATA / "squad_v1.1" / "dev-v1.1.json")
    assert set(raw["squad_version"]) == {"1.1"} and squad_rules_of("1.1") == "v1.1"
    golds = [answers["text"] for answers in raw["answers"]]
    nothing = [""] * len(golds)
    v11 = squad_metrics(nothing, golds, rules="v1.1")
    assert (v11["exact_match"], v11["f1"], v11["num_questions"]) == (pytest.approx(3 / 10570), 0.0, 10570)
    assert squad_metrics(nothing, golds, rules="v2.0")["exact_match"] == 0.0
