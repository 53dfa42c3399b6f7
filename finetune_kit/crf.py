"""A linear-chain CRF over word emissions: the log-likelihood for training (torch) and
Viterbi decoding with forbidden transitions (numpy, run in postprocessing over whole
sentences, after the windows' emissions are merged).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class LinearChainCRF(nn.Module):
    """Transition scores between tags, and from the start / to the end of a sentence.

    ``transitions[i, j]`` scores tag j following tag i. All scores start at zero, so an
    untrained CRF decodes like the emissions alone. Training is unconstrained; the scheme's
    forbidden transitions are applied at decoding (``viterbi``).
    """

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start_transitions = nn.Parameter(torch.zeros(num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(num_tags))

    def path_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unnormalised score of the tag path ``tags`` for each sequence: (batch,).

        ``emissions`` (batch, length, tags); ``mask`` (batch, length) is True on real words and
        a prefix of each row (at least the first word is real).
        """
        batch = torch.arange(emissions.size(0), device=emissions.device)
        tags = tags.masked_fill(~mask, 0)
        maskf = mask.to(emissions.dtype)
        score = self.start_transitions[tags[:, 0]] + emissions[batch, 0, tags[:, 0]]
        for t in range(1, emissions.size(1)):
            step = self.transitions[tags[:, t - 1], tags[:, t]] + emissions[batch, t, tags[:, t]]
            score = score + step * maskf[:, t]
        last = tags.gather(1, (mask.sum(1, keepdim=True) - 1).clamp(min=0)).squeeze(1)
        return score + self.end_transitions[last]

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log of the sum over every tag path of exp(score): the forward algorithm, (batch,)."""
        alpha = self.start_transitions + emissions[:, 0]
        for t in range(1, emissions.size(1)):
            step = torch.logsumexp(alpha.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1), dim=1)
            alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
        return torch.logsumexp(alpha + self.end_transitions, dim=1)

    def negative_log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-log p(tags | emissions) per sequence, (batch,)."""
        emissions = emissions.float()
        return self.log_partition(emissions, mask) - self.path_score(emissions, tags, mask)

    def stacked_scores(self) -> torch.Tensor:
        """(tags + 2, tags): the transitions, then the start row, then the end row."""
        return torch.cat([self.transitions, self.start_transitions[None], self.end_transitions[None]])


def viterbi(
    emissions: np.ndarray, transitions: np.ndarray, start: np.ndarray, end: np.ndarray,
    allowed: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> list[int]:
    """The best tag path for one sequence of word emissions (length, tags).

    ``allowed`` = boolean (start, transition, end) masks; a forbidden step scores -inf and so
    never appears in the path.
    """
    transitions = transitions.astype(np.float64)
    start = start.astype(np.float64)
    end = end.astype(np.float64)
    if allowed is not None:
        start = np.where(allowed[0], start, -np.inf)
        transitions = np.where(allowed[1], transitions, -np.inf)
        end = np.where(allowed[2], end, -np.inf)
    score = start + emissions[0]
    backpointers = []
    columns = np.arange(transitions.shape[1])
    for t in range(1, len(emissions)):
        candidates = score[:, None] + transitions
        best_previous = candidates.argmax(axis=0)
        score = candidates[best_previous, columns] + emissions[t]
        backpointers.append(best_previous)
    best = int(np.argmax(score + end))
    path = [best]
    for pointers in reversed(backpointers):
        best = int(pointers[best])
        path.append(best)
    return path[::-1]
