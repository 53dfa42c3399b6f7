"""Tagging schemes: detection, conversion, allowed transitions, label sets, spans."""

import pytest

from finetune_kit.tagging import (
    TagError,
    allowed_transition,
    check_tag,
    continuation_tag,
    convert_scheme,
    detect_scheme,
    first_invalid_transition,
    iob1_to_iob2,
    label_set,
    scheme_name,
    spans,
    transition_constraints,
)


def test_detects_each_scheme():
    assert detect_scheme([["B-PER", "I-PER", "O", "B-LOC"]]) == "IOB2"
    # IOB1: entities start with I-; B- only splits two adjacent entities of one type
    assert detect_scheme([["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]) == "IOB1"
    assert detect_scheme([["S-PER", "O", "B-LOC", "E-LOC"]]) == "BIOES"
    assert detect_scheme([["U-PER", "O", "B-LOC", "L-LOC"]]) == "BILOU"
    assert detect_scheme([["NN", "VBZ", "DT"]]) == "none"
    # an IOB2 file with a stray I-X after O is still IOB2 (B- after O is IOB2-only evidence)
    assert detect_scheme([["B-PER", "O"], ["O", "I-LOC"]]) == "IOB2"


def test_scheme_names_and_tag_checks():
    assert scheme_name("bio") == "IOB2" and scheme_name("IOBES") == "BIOES" and scheme_name("bilou") == "BILOU"
    with pytest.raises(TagError, match="unknown tagging scheme 'xyz'"):
        scheme_name("xyz")
    check_tag("B-PER", "IOB2")
    check_tag("O", "BIOES")
    with pytest.raises(TagError, match=r"tag 'PER' is not a IOB2 tag \(O, B-TYPE, I-TYPE\)"):
        check_tag("PER", "IOB2")
    with pytest.raises(TagError, match="tag 'S-PER' is not a IOB2 tag"):
        check_tag("S-PER", "IOB2")
    check_tag("NN", "none")


def test_iob1_to_iob2():
    assert iob1_to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC"]) == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    # a type change starts a new entity
    assert iob1_to_iob2(["I-PER", "I-LOC", "I-LOC"]) == ["B-PER", "B-LOC", "I-LOC"]
    # IOB2 input is left as it is
    assert iob1_to_iob2(["B-PER", "I-PER", "O"]) == ["B-PER", "I-PER", "O"]


def test_bioes_conversions():
    iob2 = ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O"]
    bioes = ["B-PER", "I-PER", "E-PER", "O", "S-LOC", "B-LOC", "E-LOC", "O"]
    assert convert_scheme(iob2, "IOB2", "BIOES") == bioes
    assert convert_scheme(bioes, "BIOES", "IOB2") == iob2
    assert convert_scheme(bioes, "BIOES", "BILOU") == ["B-PER", "I-PER", "L-PER", "O", "U-LOC", "B-LOC", "L-LOC", "O"]
    # IOB1 straight to BIOES
    assert convert_scheme(["I-PER", "B-PER", "O"], "IOB1", "BIOES") == ["S-PER", "S-PER", "O"]


def test_allowed_transitions_iob2():
    assert allowed_transition("B-PER", "I-PER", "IOB2")
    assert allowed_transition("I-PER", "I-PER", "IOB2")
    assert not allowed_transition("O", "I-PER", "IOB2")
    assert not allowed_transition("B-LOC", "I-PER", "IOB2")
    assert not allowed_transition(None, "I-PER", "IOB2")  # sentence start
    assert allowed_transition("I-PER", None, "IOB2")  # an entity may end the sentence
    assert first_invalid_transition(["B-PER", "I-PER", "O", "I-LOC"], "IOB2") == 3
    assert first_invalid_transition(["B-PER", "I-PER", "O"], "IOB2") is None


def test_allowed_transitions_bioes():
    assert allowed_transition("B-PER", "E-PER", "BIOES")
    assert not allowed_transition("B-PER", "O", "BIOES")  # an open entity must be closed
    assert not allowed_transition("B-PER", "B-PER", "BIOES")
    assert not allowed_transition("S-PER", "I-PER", "BIOES")
    assert allowed_transition("E-PER", "S-LOC", "BIOES")
    assert not allowed_transition("I-PER", None, "BIOES")
    assert first_invalid_transition(["O", "B-PER", "I-PER"], "BIOES") == 3  # ends inside an entity
    start, matrix, end = transition_constraints(["O", "B-X", "I-X", "E-X", "S-X"], "BIOES")
    assert start.tolist() == [True, True, False, False, True]
    assert end.tolist() == [True, False, False, True, True]
    assert matrix[1].tolist() == [False, False, True, True, False]  # after B-X: I-X or E-X only


def test_label_set_completes_every_type():
    assert label_set(["O", "B-PER", "B-LOC", "I-LOC"], "IOB2") == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert label_set(["O", "S-X"], "BIOES") == ["O", "B-X", "I-X", "E-X", "S-X"]
    assert label_set(["NN", "DT", "NN"], "none") == ["DT", "NN"]


def test_continuation_tag():
    assert [continuation_tag(t) for t in ["B-PER", "I-PER", "O", "S-X", "E-X", "NN"]] == \
        ["I-PER", "I-PER", "O", "I-X", "I-X", "NN"]


def test_spans_are_strict():
    assert spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC"], "IOB2") == [(0, 2, "PER"), (4, 6, "LOC")]
    assert spans(["S-PER", "B-LOC", "E-LOC", "B-X"], "BIOES") == [(0, 1, "PER"), (1, 3, "LOC")]
    assert spans(["NN"], "none") == []
