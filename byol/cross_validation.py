"""Choosing a learning rate by cross-validation, never by the test split: the folds' mean held-out score
per candidate, a grid widened past an edge it chooses, and the training size a fold leaves."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from byol.finetune import Job


def cross_validate(
    candidates: list[float], n_items: int, folds: int, score_fold, job: Job, what: str
) -> tuple[float, dict[float, float]]:
    """The candidate with the best mean held-out accuracy over `folds` folds of `n_items` training
    items (ties: the lower held-out loss), and every candidate's mean held-out accuracy, in the order
    tried: `candidates`, then, with job.config.widen_rates, rates past the grid's edge (widened_grid).
    `score_fold(candidate, kept, held_out)` trains on the rows `kept` and returns its last metrics
    row, scored on `held_out`; the test split is never looked at. The folds are drawn by job.seed.
    """
    order = torch.randperm(n_items, generator=torch.Generator().manual_seed(job.seed))
    held_out = [order[fold::folds] for fold in range(folds)]

    def score(candidate: float) -> tuple[float, float]:
        accuracy = loss = 0.0
        for fold in range(folds):
            # The folds' held-out scores are not test scores: the bar says what it is doing instead.
            job.progress.set_postfix_str(f"choosing {what}: {candidate:g}, fold {fold + 1}/{folds}")
            kept = torch.cat([held_out[other] for other in range(folds) if other != fold])
            last = score_fold(candidate, kept, held_out[fold])
            accuracy += last["test_acc"] / folds
            loss += last["test_loss"] / folds
        return accuracy, -loss

    scores = widened_grid(candidates, score, job.config.widen_rates)
    return max(scores, key=scores.__getitem__), {rate: accuracy for rate, (accuracy, _) in scores.items()}


def widened_grid(candidates: list[float], score, widen: int) -> dict[float, tuple]:
    """Every candidate's score (`score(candidate)`, higher is better), in the order tried. While the
    best sits on an edge of the rates tried (of 2 or more), one more rate past that edge, a grid step
    further (the ratio of the two rates nearest the edge), up to `widen` times in all: a choice on the
    edge of its grid may only say that the grid stopped too early."""
    scores = {candidate: score(candidate) for candidate in candidates}
    for _ in range(widen if len(scores) > 1 else 0):
        ordered = sorted(scores)
        best = max(scores, key=scores.__getitem__)
        if best not in (ordered[0], ordered[-1]):
            break
        edge, inner = (ordered[0], ordered[1]) if best == ordered[0] else (ordered[-1], ordered[-2])
        beyond = edge * edge / inner
        scores[beyond] = score(beyond)
    return scores


def cv_training_size(n_items: int, folds: int) -> int:
    """The fewest training items a fold of `folds`-fold cross-validation leaves (largest fold held out)."""
    return n_items - math.ceil(n_items / folds)
