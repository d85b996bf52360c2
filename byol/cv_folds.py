"""Stage 3's evaluation by k-fold cross-validation on the labelled images: stratified folds, and the folds'
metrics rows pooled into one run's."""

from __future__ import annotations

import torch


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> list[list[int]]:
    """Positions 0..len(labels)-1 dealt into `folds` held-out parts, every class spread evenly: each
    class's positions in a seeded order, dealt round-robin, the deal running on from class to class so
    that the parts' sizes differ by one at most."""
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[int]] = [[] for _ in range(folds)]
    dealt = 0
    for label in sorted(set(labels.tolist())):
        members = (labels == label).nonzero().flatten()
        for position in members[torch.randperm(len(members), generator=generator)].tolist():
            parts[dealt % folds].append(position)
            dealt += 1
    return [sorted(part) for part in parts]


def pool_folds(fold_runs: list[list[dict]], sizes: list[int]) -> list[dict]:
    """Cross-validation's metrics rows, epoch by epoch: training loss and accuracy averaged over the
    folds, held-out loss and accuracy weighted by each fold's held-out images (NaN on the epochs
    nothing was scored), seconds summed, rates the folds' median."""
    total = sum(sizes)
    pooled = []
    for epoch_rows in zip(*fold_runs):
        row = dict(epoch_rows[0])
        for name in ("train_loss", "train_acc"):
            row[name] = sum(r[name] for r in epoch_rows) / len(epoch_rows)
        for name in ("test_loss", "test_acc"):
            row[name] = sum(r[name] * size for r, size in zip(epoch_rows, sizes)) / total
        row["seconds"] = sum(r["seconds"] for r in epoch_rows)
        for name in ("head_lr", "backbone_lr"):
            row[name] = float(torch.tensor([r[name] for r in epoch_rows], dtype=torch.float64).median())
        pooled.append(row)
    return pooled
