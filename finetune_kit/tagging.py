"""Tagging schemes: reading, checking and converting tag sequences, and the transitions each
scheme allows.

Schemes: ``IOB2`` (BIO: every entity starts with B-), ``IOB1`` (B- only between two adjacent
entities of one type; converted to IOB2 on reading), ``BIOES`` (B-, I-, E-nd, S-ingle),
``BILOU`` (B-, I-, L-ast, U-nit) and ``none`` (plain labels without prefixes: POS tags).
Pure functions on lists of strings; the tagging task and span NER build on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

OUTSIDE = "O"
SCHEMES = ("IOB2", "IOB1", "BIOES", "BILOU", "none")
ALIASES = {"bio": "IOB2", "iob2": "IOB2", "iob": "IOB2", "iob1": "IOB1", "bioes": "BIOES", "iobes": "BIOES",
           "bilou": "BILOU", "none": "none", "plain": "none"}
PREFIXES = {"IOB2": "BI", "IOB1": "BI", "BIOES": "BIES", "BILOU": "BILU", "none": ""}


class TagError(ValueError):
    """A tag or a tag sequence that the scheme does not allow; the message says which."""


def scheme_name(name: str) -> str:
    """The canonical name of a scheme given in any usual spelling ('bio', 'IOBES', ...)."""
    canonical = ALIASES.get(name.strip().lower())
    if canonical is None:
        raise TagError(f"unknown tagging scheme {name!r}; choose auto, IOB2 (BIO), IOB1, BIOES (IOBES), "
                       f"BILOU or none")
    return canonical


def split_tag(tag: str) -> tuple[str, str]:
    """('B', 'PER') for 'B-PER', ('O', '') for 'O'; a tag without a prefix gives ('', tag)."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BIESLU":
        return tag[0], tag[2:]
    return "", tag


def entity_type(tag: str) -> str:
    return split_tag(tag)[1]


def detect_scheme(sequences: Iterable[Sequence[str]]) -> str:
    """The scheme a set of tag sequences is written in.

    E-/S- prefixes mean BIOES, L-/U- BILOU; with only B-/I- the data is IOB2 when some entity
    starts with B- after O, another type or the sentence start (IOB1 never does that), IOB1 when
    some entity starts with I- and none with B-; tags without any prefix are plain labels.
    """
    prefixes: set[str] = set()
    iob2_evidence = iob1_evidence = False
    for tags in sequences:
        previous = OUTSIDE
        for tag in tags:
            prefix, kind = split_tag(tag)
            prefixes.add(prefix)
            prev_prefix, prev_kind = split_tag(previous)
            continues = prev_prefix in ("B", "I") and prev_kind == kind
            if prefix == "B" and not continues:
                iob2_evidence = True
            elif prefix == "I" and not continues:
                iob1_evidence = True
            previous = tag
    entity_prefixes = prefixes - {OUTSIDE}
    if entity_prefixes == {""}:
        return "none"
    if entity_prefixes & set("ES"):
        return "BIOES"
    if entity_prefixes & set("LU"):
        return "BILOU"
    if iob1_evidence and not iob2_evidence:
        return "IOB1"
    return "IOB2"


def check_tag(tag: str, scheme: str) -> None:
    """Raise ``TagError`` when ``tag`` is not a tag of ``scheme``."""
    prefix, kind = split_tag(tag)
    if scheme == "none":  # plain labels: any non-empty tag
        if not tag.strip():
            raise TagError("empty tag")
        return
    if prefix == OUTSIDE:
        return
    if prefix == "" or prefix not in PREFIXES[scheme] or not kind:
        allowed = ", ".join(f"{p}-TYPE" for p in PREFIXES[scheme])
        raise TagError(f"tag {tag!r} is not a {scheme} tag (O, {allowed})")


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 -> IOB2: an I-X that starts an entity becomes B-X."""
    out: list[str] = []
    previous = OUTSIDE
    for tag in tags:
        prefix, kind = split_tag(tag)
        prev_prefix, prev_kind = split_tag(previous)
        if prefix == "I" and not (prev_prefix in ("B", "I") and prev_kind == kind):
            tag = f"B-{kind}"
        out.append(tag)
        previous = tag
    return out


def bilou_to_bioes(tags: Sequence[str]) -> list[str]:
    """BILOU and BIOES are the same scheme with other letters (L = E, U = S)."""
    rename = {"L": "E", "U": "S"}
    out = []
    for tag in tags:
        prefix, kind = split_tag(tag)
        out.append(f"{rename[prefix]}-{kind}" if prefix in rename else tag)
    return out


def from_spans(length: int, entities: Iterable[tuple[int, int, str]], scheme: str) -> list[str]:
    """Tags for ``length`` words with the given (start, end exclusive, type) entities."""
    single, last = {"BIOES": ("S", "E"), "BILOU": ("U", "L")}.get(scheme, ("B", "I"))
    tags = [OUTSIDE] * length
    for start, end, kind in entities:
        for i in range(start, end):
            tags[i] = f"I-{kind}"
        tags[start] = f"B-{kind}"
        if end - start == 1:
            tags[start] = f"{single}-{kind}"
        elif scheme in ("BIOES", "BILOU"):
            tags[end - 1] = f"{last}-{kind}"
    return tags


def convert_scheme(tags: Sequence[str], source: str, target: str) -> list[str]:
    """The same entities written in another scheme (IOB1, IOB2, BIOES, BILOU).

    IOB1/IOB2 input is read the lenient way (an I-X that starts an entity starts it), so no
    word of an entity is lost; BIOES/BILOU input is read strictly.
    """
    if source in ("IOB1", "IOB2"):
        tags = iob1_to_iob2(tags)
        source = "IOB2"
    if target == "IOB1":
        raise TagError("converting to IOB1 is not supported; IOB2 is its well-formed successor")
    return from_spans(len(tags), spans(tags, source), target)


def _inside(scheme: str) -> tuple[str, ...]:
    """Prefixes after which the entity goes on (the next tag must continue it)."""
    return ("B", "I") if scheme in ("BIOES", "BILOU") else ()


def allowed_transition(previous: str | None, tag: str | None, scheme: str) -> bool:
    """Whether ``tag`` may follow ``previous`` (None: the sentence start or end).

    IOB2: I-X only after B-X or I-X. BIOES/BILOU: I-X and E-X (L-X) only after B-X or I-X;
    after B-X or I-X only I-X or E-X (L-X); a sentence ends only after O, E- (L-) or S- (U-).
    """
    if scheme == "none":
        return True
    prev_prefix, prev_kind = split_tag(previous) if previous is not None else (None, "")
    prefix, kind = split_tag(tag) if tag is not None else (None, "")
    closing = {"BIOES": "E", "BILOU": "L"}.get(scheme)
    if prev_prefix in _inside(scheme):
        return prefix in ("I", closing) and kind == prev_kind
    if prefix == "I" or (closing is not None and prefix == closing):
        return prev_prefix in ("B", "I") and prev_kind == kind
    return True


def first_invalid_transition(tags: Sequence[str], scheme: str) -> int | None:
    """Index of the first tag that cannot follow its predecessor (len(tags): a bad ending)."""
    previous: str | None = None
    for i, tag in enumerate(tags):
        if not allowed_transition(previous, tag, scheme):
            return i
        previous = tag
    if tags and not allowed_transition(tags[-1], None, scheme):
        return len(tags)
    return None


def transition_constraints(labels: Sequence[str], scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks (start[j], transition[i, j], end[i]) of what ``scheme`` allows."""
    start = np.array([allowed_transition(None, t, scheme) for t in labels])
    matrix = np.array([[allowed_transition(a, b, scheme) for b in labels] for a in labels])
    end = np.array([allowed_transition(t, None, scheme) for t in labels])
    return start, matrix, end


def continuation_tag(tag: str) -> str:
    """The label of a word's later subwords under ``subword_labels=all``: inside the entity.

    B-X (and E-X, S-X, L-X, U-X) become I-X; O and plain labels stay as they are.
    """
    prefix, kind = split_tag(tag)
    return f"I-{kind}" if prefix in ("B", "I", "E", "S", "L", "U") else tag


def label_set(tags: Iterable[str], scheme: str) -> list[str]:
    """O first, then every prefix of the scheme for each entity type seen, types sorted.

    A type seen only as B-X still gets I-X (and E-X, S-X...), so a single-word entity type in
    training does not make a longer one in the test data an unknown label.
    """
    seen = set(tags)
    if scheme == "none":
        return sorted(seen)
    types = sorted({entity_type(t) for t in seen if t != OUTSIDE})
    prefixes = PREFIXES["IOB2" if scheme == "IOB1" else scheme]
    return [OUTSIDE] + [f"{p}-{kind}" for kind in types for p in prefixes]


def spans(tags: Sequence[str], scheme: str) -> list[tuple[int, int, str]]:
    """Entities (start, end exclusive, type) as the strict scorer reads them.

    A sequence the scheme does not allow (an I-X after O in IOB2) yields no entity for the
    ill-formed part, exactly as seqeval's strict mode counts it.
    """
    from seqeval.scheme import BILOU, IOB2, IOBES, Entities

    if scheme == "none" or not tags:
        return []
    seqeval_scheme = {"IOB2": IOB2, "IOB1": IOB2, "BIOES": IOBES, "BILOU": BILOU}[scheme]
    found = Entities([list(tags)], seqeval_scheme).entities[0]
    return [(e.start, e.end, e.tag) for e in found]
