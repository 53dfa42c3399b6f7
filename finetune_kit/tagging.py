"""Tagging schemes: reading, checking and converting tag sequences, and the transitions each
scheme allows.

Schemes: ``IOB2`` (BIO: every entity starts with B-), ``IOB1`` (B- only between two adjacent
entities of one type; converted to IOB2 on reading), ``BIOES`` (B-, I-, E-nd, S-ingle),
``BILOU`` (B-, I-, L-ast, U-nit) and ``none`` (plain labels without prefixes: POS tags).
Pure functions on lists of strings; the tagging task and span NER build on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


# What a tag shows of the scheme it is written in (its role), and the schemes that admit it:
# O fits every scheme; a B-/I- whose entity goes on (the next tag is I-, E- or L- of its type)
# every scheme with entities; a B-/I- that ends its entity only IOB2 (and IOB1), since BIOES and
# BILOU end one with E-/S- or L-/U-; E-/S- only BIOES; L-/U- only BILOU; a tag without a prefix
# only plain labels. IOB1 is told from IOB2 afterwards, by how its entities start.
ROLE_SCHEMES: dict[str, frozenset[str]] = {
    "outside": frozenset({"IOB2", "BIOES", "BILOU", "none"}),
    "inside": frozenset({"IOB2", "BIOES", "BILOU"}),
    "ending": frozenset({"IOB2"}),
    "BIOES": frozenset({"BIOES"}),
    "BILOU": frozenset({"BILOU"}),
    "plain": frozenset({"none"}),
}
# The scheme detected when several admit every tag (only B-/I- tags: IOB2, BIOES and BILOU do).
DETECTION_ORDER = ("IOB2", "BIOES", "BILOU", "none")


@dataclass(frozen=True)
class TagAt:
    """A tag of a set of sequences: sequence ``sentence``, position ``index``, and its role."""

    sentence: int
    index: int
    tag: str
    role: str


class MixedSchemesError(TagError):
    """Tags that no one scheme admits: ``odd``, the first tag that the scheme of most other tags
    (``scheme``) does not admit, and ``usual``, a tag showing that scheme. ``readable_as`` is
    a scheme that reads every tag (an explicit choice), if one does."""

    def __init__(self, odd: TagAt, usual: TagAt, scheme: str, readable_as: str | None) -> None:
        super().__init__(f"tag {odd.tag} does not fit the {scheme} tags of the rest")
        self.odd, self.usual, self.scheme, self.readable_as = odd, usual, scheme, readable_as

    def explain(self, odd_place: str, usual_place: str, scheme_option: str | None = None) -> str:
        """The one-line message: '<odd_place>: tag E-PER is BIOES, but the file's other tags are
        IOB2 (<usual_place>: B-LOC); fix the tag' (and how to choose a scheme that reads it)."""
        fix = "fix the tag"
        if scheme_option and self.readable_as:
            readable = self.readable_as
            fix += f", or set {scheme_option}={readable} to read every tag as {scheme_words(readable)}"
        return (f"{odd_place}: {describe_tag(self.odd, self.scheme)}, but the file's other tags are "
                f"{scheme_words(self.scheme)} ({usual_place}: {self.usual.tag}); {fix}")


def scheme_words(scheme: str) -> str:
    return "plain labels without a scheme" if scheme == "none" else scheme


def describe_tag(tag: TagAt, against: str) -> str:
    """What makes ``tag`` foreign to the scheme ``against``, in words."""
    if tag.role in ("BIOES", "BILOU"):
        return f"tag {tag.tag} is {tag.role}"
    if tag.role == "plain":
        return f"tag {tag.tag} has no B-/I- prefix"
    if tag.role == "starting":
        return f"tag {tag.tag} starts an entity, as IOB1 does ({against} starts one with B-)"
    if against in ("BIOES", "BILOU"):
        closing = "E- or S-" if against == "BIOES" else "L- or U-"
        return f"tag {tag.tag} ends an entity, as IOB2 does ({against} ends one with {closing})"
    return f"tag {tag.tag} is an entity tag"


def tag_role(tag: str, next_tag: str | None) -> str:
    """The role of ``tag`` followed by ``next_tag`` (None: the sentence ends); see ROLE_SCHEMES."""
    prefix, kind = split_tag(tag)
    if prefix == OUTSIDE:
        return "outside"
    if prefix == "":
        return "plain"
    if prefix in "ES":
        return "BIOES"
    if prefix in "LU":
        return "BILOU"
    next_prefix, next_kind = split_tag(next_tag) if next_tag is not None else (None, "")
    return "inside" if next_prefix in ("I", "E", "L") and next_kind == kind else "ending"


def tags_with_roles(sequences: Sequence[Sequence[str]]) -> Iterable[TagAt]:
    """Every tag other than O, in order, with its role."""
    for s, tags in enumerate(sequences):
        for i, tag in enumerate(tags):
            role = tag_role(tag, tags[i + 1] if i + 1 < len(tags) else None)
            if role != "outside":
                yield TagAt(s, i, tag, role)


def _entity_starts(sequences: Sequence[Sequence[str]]) -> tuple[TagAt | None, TagAt | None]:
    """The first entity that starts with B- and the first that starts with I- (after O, another
    type or the sentence start): IOB2 starts every entity with B-, IOB1 only one right after
    another of its type."""
    b_start = i_start = None
    for s, tags in enumerate(sequences):
        previous = OUTSIDE
        for i, tag in enumerate(tags):
            prefix, kind = split_tag(tag)
            prev_prefix, prev_kind = split_tag(previous)
            if not (prev_prefix in ("B", "I") and prev_kind == kind):
                if prefix == "B" and b_start is None:
                    b_start = TagAt(s, i, tag, "starting")
                elif prefix == "I" and i_start is None:
                    i_start = TagAt(s, i, tag, "starting")
            previous = tag
            if b_start is not None and i_start is not None:
                return b_start, i_start
    return b_start, i_start


def detect_scheme(sequences: Iterable[Sequence[str]]) -> str:
    """The scheme a set of tag sequences is written in: the one that admits every tag (see
    ROLE_SCHEMES), IOB2 before BIOES before BILOU where several do. With only B-/I- tags the
    data is IOB1 when some entity starts with I- and none with B- (after O, another type or the
    sentence start). Tags that no scheme admits together raise ``MixedSchemesError``.
    """
    sequences = [list(tags) for tags in sequences]
    admitted = frozenset(DETECTION_ORDER)
    for tag in tags_with_roles(sequences):
        admitted &= ROLE_SCHEMES[tag.role]
        if not admitted:
            raise _mixed_schemes(sequences)
    scheme = next(s for s in DETECTION_ORDER if s in admitted)
    if scheme == "IOB2":
        b_start, i_start = _entity_starts(sequences)
        if i_start is not None and b_start is None:
            return "IOB1"
    return scheme


def _mixed_schemes(sequences: Sequence[Sequence[str]]) -> MixedSchemesError:
    """The error for tags of several schemes: the scheme that admits the most tags is the file's;
    the first tag it does not admit is the odd one, shown beside a tag that only that scheme
    (not the odd tag's) admits."""
    tags = list(tags_with_roles(sequences))
    admits = {s: sum(s in ROLE_SCHEMES[t.role] for t in tags) for s in DETECTION_ORDER}
    scheme = max(DETECTION_ORDER, key=lambda s: (admits[s], -DETECTION_ORDER.index(s)))
    odd = next(t for t in tags if scheme not in ROLE_SCHEMES[t.role])
    fitting = [t for t in tags if scheme in ROLE_SCHEMES[t.role]]
    usual = next((t for t in fitting if not ROLE_SCHEMES[t.role] & ROLE_SCHEMES[odd.role]), fitting[0])
    if scheme == "IOB2":
        b_start, i_start = _entity_starts(sequences)
        scheme = "IOB1" if i_start is not None and b_start is None else "IOB2"
    readable = scheme if all(_fits(t.tag, scheme) for t in tags) else None
    return MixedSchemesError(odd, usual, scheme, readable)


def _fits(tag: str, scheme: str) -> bool:
    try:
        check_tag(tag, scheme)
    except TagError:
        return False
    return True


def first_foreign_tag(sequences: Iterable[Sequence[str]], scheme: str) -> TagAt | None:
    """The first tag of data for a model that tags in ``scheme`` showing that the data is written
    in another scheme (see ROLE_SCHEMES), or for an IOB2 model the first entity start of data in
    IOB1 (no entity starts with B-); None when the data fits. IOB1 models read IOB2 data too."""
    sequences = [list(tags) for tags in sequences]
    admitting = "IOB2" if scheme == "IOB1" else scheme
    foreign = next((t for t in tags_with_roles(sequences) if admitting not in ROLE_SCHEMES[t.role]), None)
    if foreign is None and scheme == "IOB2":
        b_start, i_start = _entity_starts(sequences)
        if i_start is not None and b_start is None:
            return i_start
    return foreign


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
