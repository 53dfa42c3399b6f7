import pytest

from finetune_kit.metrics import classification_metrics


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
