"""Tagging schemes: detection, conversion, allowed transitions, label sets, spans."""

import pytest

from finetune_kit.tagging import (
    MixedSchemesError,
    TagError,
    allowed_transition,
    check_tag,
    continuation_tag,
    convert_scheme,
    describe_tag,
    detect_scheme,
    first_foreign_tag,
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


def test_detection_reads_every_tag_and_refuses_mixed_schemes():
    # B-/I- only: IOB2, BIOES and BILOU all admit the tags; IOB2 is preferred
    assert detect_scheme([["B-PER", "I-PER"], ["O", "B-LOC"]]) == "IOB2"
    # a B- that ends its entity is IOB2 only: with an E- elsewhere no scheme admits both
    with pytest.raises(MixedSchemesError) as caught:
        detect_scheme([["O", "B-LOC", "O"], ["B-PER", "I-PER", "O"], ["B-PER", "E-PER"]])
    error = caught.value
    assert (error.odd.sentence, error.odd.index, error.odd.tag) == (2, 1, "E-PER")
    assert (error.usual.sentence, error.usual.index, error.usual.tag) == (0, 1, "B-LOC")
    assert error.explain("t.conll line 57", "line 3") == (
        "t.conll line 57: tag E-PER is BIOES, but the file's other tags are IOB2 (line 3: B-LOC); fix the tag")
    # BIOES data with one entity left open: BIOES reads every tag, so it is offered
    with pytest.raises(MixedSchemesError) as caught:
        detect_scheme([["S-PER", "O", "B-LOC", "E-LOC"], ["O", "B-PER", "O"]])
    assert caught.value.explain("f line 7", "line 1", "-o scheme") == (
        "f line 7: tag B-PER ends an entity, as IOB2 does (BIOES ends one with E- or S-), but the file's other "
        "tags are BIOES (line 1: S-PER); fix the tag, or set -o scheme=BIOES to read every tag as BIOES")
    # plain labels with a stray entity tag, and entity tags with a stray plain label
    with pytest.raises(MixedSchemesError) as caught:
        detect_scheme([["DT", "NN"], ["DT", "B-NP"]])
    assert caught.value.explain("f line 5", "line 1", "-o scheme") == (
        "f line 5: tag B-NP is an entity tag, but the file's other tags are plain labels without a scheme "
        "(line 1: DT); fix the tag, or set -o scheme=none to read every tag as plain labels without a scheme")
    with pytest.raises(MixedSchemesError, match="tag PER does not fit the IOB2 tags"):
        detect_scheme([["B-PER", "I-PER"], ["O", "PER"], ["B-LOC"]])
    # E- and L- in one file: BIOES and BILOU each lack one
    with pytest.raises(MixedSchemesError) as caught:
        detect_scheme([["B-X", "E-X"], ["S-X"], ["B-X", "L-X"]])
    assert (caught.value.odd.tag, caught.value.scheme, caught.value.readable_as) == ("L-X", "BIOES", None)


def test_first_foreign_tag_of_data_for_a_model():
    iob2 = [["O", "B-PER", "I-PER"], ["B-LOC", "O"]]
    assert first_foreign_tag(iob2, "IOB2") is None and first_foreign_tag(iob2, "IOB1") is None
    foreign = first_foreign_tag(iob2, "BIOES")  # I-PER ends its entity: IOB2
    assert (foreign.sentence, foreign.index, foreign.tag, foreign.role) == (0, 2, "I-PER", "ending")
    assert describe_tag(foreign, "BIOES") == "tag I-PER ends an entity, as IOB2 does (BIOES ends one with E- or S-)"
    assert first_foreign_tag([["O", "S-PER"]], "IOB2").tag == "S-PER"
    iob1 = [["O", "I-PER", "I-PER"], ["I-LOC", "B-LOC"]]
    foreign = first_foreign_tag(iob1, "IOB2")  # every entity starts with I-: IOB1
    assert (foreign.sentence, foreign.index) == (0, 1)
    assert describe_tag(foreign, "IOB2") == "tag I-PER starts an entity, as IOB1 does (IOB2 starts one with B-)"
    assert first_foreign_tag(iob1 + [["B-PER"]], "IOB2") is None  # some start with B-: IOB2 read leniently
    assert first_foreign_tag([["DT", "B-NP"]], "none").tag == "B-NP"
