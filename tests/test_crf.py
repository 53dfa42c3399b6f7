"""The CRF against brute force on tiny cases; Viterbi and forbidden transitions."""

import itertools

import numpy as np
import torch

from finetune_kit.crf import LinearChainCRF, viterbi
from finetune_kit.tagging import first_invalid_transition, transition_constraints


def random_crf(num_tags: int, seed: int) -> LinearChainCRF:
    crf = LinearChainCRF(num_tags)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    return crf


@torch.no_grad()
def brute_score(crf: LinearChainCRF, emissions: torch.Tensor, path: tuple[int, ...]) -> float:
    score = crf.start_transitions[path[0]] + emissions[0, path[0]]
    for t in range(1, len(path)):
        score = score + crf.transitions[path[t - 1], path[t]] + emissions[t, path[t]]
    return float(score + crf.end_transitions[path[-1]])


def test_forward_algorithm_equals_enumeration():
    num_tags, length = 3, 4
    crf = random_crf(num_tags, seed=0)
    emissions = torch.randn(2, length, num_tags, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[True] * 4, [True, True, True, False]])  # the second sequence has 3 words
    tags = torch.tensor([[0, 2, 1, 1], [2, 2, 0, 0]])
    with torch.no_grad():
        log_z = crf.log_partition(emissions, mask)
        nll = crf.negative_log_likelihood(emissions, tags, mask)
    for b, n in enumerate([4, 3]):
        scores = [brute_score(crf, emissions[b], path) for path in itertools.product(range(num_tags), repeat=n)]
        expected_log_z = float(torch.logsumexp(torch.tensor(scores), 0))
        assert abs(float(log_z[b]) - expected_log_z) < 1e-5
        gold = brute_score(crf, emissions[b], tuple(tags[b, :n].tolist()))
        assert abs(float(nll[b]) - (expected_log_z - gold)) < 1e-5


def test_training_the_crf_lowers_the_loss():
    crf = LinearChainCRF(3)
    emissions = torch.zeros(1, 5, 3)
    tags = torch.tensor([[0, 1, 2, 1, 2]])
    mask = torch.ones(1, 5, dtype=torch.bool)
    optimizer = torch.optim.SGD(crf.parameters(), lr=0.5)
    first = None
    for _ in range(30):
        loss = crf.negative_log_likelihood(emissions, tags, mask).sum()
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < first / 3
    path = viterbi(np.zeros((5, 3)), *[p.detach().numpy() for p in (crf.transitions, crf.start_transitions,
                                                                     crf.end_transitions)])
    assert path == [0, 1, 2, 1, 2]  # the transitions alone now decode the training sequence


def test_viterbi_is_the_best_allowed_path():
    labels = ["O", "B-A", "I-A", "B-B", "I-B"]
    allowed = transition_constraints(labels, "IOB2")
    rng = np.random.default_rng(0)
    for trial in range(20):
        length = 4
        emissions = rng.normal(size=(length, 5))
        transitions, start, end = rng.normal(size=(5, 5)), rng.normal(size=5), rng.normal(size=5)
        best, best_score = None, -np.inf
        for path in itertools.product(range(5), repeat=length):
            if first_invalid_transition([labels[i] for i in path], "IOB2") is not None:
                continue
            score = start[path[0]] + emissions[0, path[0]] + end[path[-1]] + sum(
                transitions[path[t - 1], path[t]] + emissions[t, path[t]] for t in range(1, length))
            if score > best_score:
                best, best_score = list(path), score
        assert viterbi(emissions, transitions, start, end, allowed) == best, trial


def test_viterbi_never_emits_a_forbidden_transition():
    rng = np.random.default_rng(1)
    for scheme, labels in (("IOB2", ["O", "B-A", "I-A", "B-B", "I-B"]),
                           ("BIOES", ["O", "B-A", "I-A", "E-A", "S-A", "B-B", "I-B", "E-B", "S-B"])):
        allowed = transition_constraints(labels, scheme)
        inside = [i for i, label in enumerate(labels) if label[0] in "IE"]
        for _ in range(200):
            emissions = rng.normal(size=(int(rng.integers(1, 12)), len(labels)))
            emissions[:, inside] += 5.0  # I-/E- tags would win everywhere without the constraints
            transitions = rng.normal(size=(len(labels), len(labels)))
            path = viterbi(emissions, transitions, np.zeros(len(labels)), np.zeros(len(labels)), allowed)
            assert first_invalid_transition([labels[i] for i in path], scheme) is None
