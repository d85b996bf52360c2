"""Choosing a learning rate (and fine-tuning's length) by cross-validation or the validation split, never by
the test split: the folds' mean held-out score per candidate, a grid widened past an edge it chooses, the
rate-then-length choice, and the training size a fold leaves."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from byol.classifier_config import ClassifierConfig
    from byol.finetune import Job


def fold_scorer(n_items: int, folds: int, score_fold, job: Job, what: str):
    """A function `score(candidate, shown)`: the candidate's mean held-out (accuracy, -loss) over
    `folds` folds of `n_items` training items, drawn by job.seed (the same folds on every call).
    `score_fold(candidate, kept, held_out)` trains on the rows `kept` and returns its last metrics row,
    scored on `held_out`; the test split is never looked at. The bar shows `what` and `shown`."""
    order = torch.randperm(n_items, generator=torch.Generator().manual_seed(job.seed))
    held_out = [order[fold::folds] for fold in range(folds)]

    def score(candidate, shown: str) -> tuple[float, float]:
        accuracy = loss = 0.0
        for fold in range(folds):
            # The folds' held-out scores are not test scores: the bar says what it is doing instead.
            job.progress.set_postfix_str(f"choosing {what}: {shown}, fold {fold + 1}/{folds}")
            kept = torch.cat([held_out[other] for other in range(folds) if other != fold])
            last = score_fold(candidate, kept, held_out[fold])
            accuracy += last["test_acc"] / folds
            loss += last["test_loss"] / folds
        return accuracy, -loss

    return score


def cross_validate(
    candidates: list[float], n_items: int, folds: int, score_fold, job: Job, what: str
) -> tuple[float, dict[float, float]]:
    """The candidate with the best mean held-out accuracy over `folds` folds of `n_items` training
    items (ties: the lower held-out loss; fold_scorer), and every candidate's mean held-out accuracy,
    in the order tried: `candidates`, then, with job.config.widen_rates, rates past the grid's edge
    (widened_grid). The test split is never looked at.
    """
    score = fold_scorer(n_items, folds, score_fold, job, what)
    scores = widened_grid(
        candidates, lambda candidate: score(candidate, f"{candidate:g}"), job.config.widen_rates
    )
    return max(scores, key=scores.__getitem__), {rate: accuracy for rate, (accuracy, _) in scores.items()}


@dataclass(frozen=True)
class RateAndLength:
    """A fine-tuning choice: the rate, the run length, and each candidate's (accuracy, -loss) where
    there was a choice ({} where there was none)."""

    lr: float
    epochs: int
    rates: dict[float, tuple[float, float]]
    lengths: dict[int, tuple[float, float]]

    def text(self, with_rate: bool = False) -> str:
        """What was chosen, with the candidates' accuracies: 'lr 0.001 (0.0001: 0.612, ...) and 60
        epochs (30: 0.650, 60: 0.664)'; a rate that was not chosen only `with_rate`."""
        parts = [f"lr {self.lr:g}" + (f" ({scores_text(self.rates)})" if self.rates else "")]
        parts = parts if self.rates or with_rate else []
        if self.lengths:
            parts.append(f"{self.epochs} epochs ({scores_text(self.lengths)})")
        return " and ".join(parts)


def scores_text(scores: dict) -> str:
    """Each candidate's accuracy (the first of its scores), in order: '0.0001: 0.612, 0.0003: 0.640'."""
    return ", ".join(f"{candidate:g}: {score[0]:.3f}" for candidate, score in sorted(scores.items()))


def choose_rate_then_length(config: ClassifierConfig, score) -> RateAndLength:
    """Fine-tuning's rate, then its length, by `score(lr, epochs)` -> (accuracy, -loss), higher
    better (held-out folds, or the validation split), each pair scored once: the rate from
    config.finetune_lrs at config.epochs, then, with two or more config.finetune_epochs, the length
    from them at that rate, each grid widened past an edge it chooses (widened_grid). One rate or one
    length: taken as it is, not scored."""
    scored: dict[tuple, tuple[float, float]] = {}

    def once(lr: float, epochs: int) -> tuple[float, float]:
        if (lr, epochs) not in scored:
            scored[lr, epochs] = score(lr, epochs)
        return scored[lr, epochs]

    lr, epochs = config.finetune_lrs[0], (config.finetune_epochs or [config.epochs])[0]  # no choice
    rates, lengths = {}, {}
    if len(config.finetune_lrs) > 1:
        rates = widened_grid(config.finetune_lrs, lambda rate: once(rate, config.epochs), config.widen_rates)
        lr = max(rates, key=rates.__getitem__)
    if len(config.finetune_epochs) > 1:
        # A length widened below the grid is at least one epoch (1, 2 -> 0.5 would round to none).
        tried = widened_grid(
            [float(n) for n in config.finetune_epochs],
            lambda n: once(lr, max(1, round(n))),
            config.widen_rates,
        )
        lengths = {max(1, round(n)): result for n, result in tried.items()}
        epochs = max(lengths, key=lengths.__getitem__)
    return RateAndLength(lr, epochs, rates, lengths)


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
