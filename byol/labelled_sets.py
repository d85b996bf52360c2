"""Which labelled images a classifier run trains on: the pool a seed draws from, a balanced draw of N, and
a short id of the set."""

from __future__ import annotations

import hashlib

import torch

from byol.data import Split, labelled_rows
from byol.errors import UserError


def labelled_pool(split: Split, seed: int, labelled_sets: str) -> list[int]:
    """The cache rows a run's labelled set is drawn from.

    per-seed (the study's, on a folder where every image has its folder label): seed 0 keeps the
    split's own labelled images; every other seed draws its own set from all the pretraining images
    (labelled and unlabelled, whose folder labels a real low-label user would not have), so the spread
    over seeds includes which images happened to be labelled, at every label count. split (a user's own
    labels): every seed draws from the split's labelled images, which at their full count is one set.
    """
    if labelled_sets == "split" or seed == 0:
        return split.indices("labelled")
    return labelled_rows(split, "labelled", "unlabelled")


def balanced_subset(split: Split, n_labels: int, seed: int, labelled_sets: str = "split") -> list[int]:
    """`n_labels` cache rows drawn from labelled_pool, balanced across classes, chosen by `seed`.

    The same rows for both inits and both modes. --n-labels may not exceed the split's labelled images
    (seed 0's pool), so that every seed trains on as many images as the split holds labels.
    """
    labelled = split.table.loc[split.indices("labelled")]
    classes = sorted(labelled["label"].unique())
    if n_labels > len(labelled) or (n_labels and n_labels < len(classes)):
        raise UserError(
            f"--n-labels {n_labels}: must be between {len(classes)} (one per class) and the "
            f"{len(labelled)} labelled images"
        )
    n_labels = n_labels or len(labelled)  # 0: as many as the split holds labels
    pool = split.table.loc[labelled_pool(split, seed, labelled_sets)]
    if n_labels == len(pool):
        return pool.index.tolist()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    base, remainder = divmod(n_labels, len(classes))
    extra = set(torch.randperm(len(classes), generator=generator)[:remainder].tolist())
    for position, label in enumerate(classes):
        rows = pool.index[pool["label"] == label].tolist()
        quota = base + (position in extra)
        if quota > len(rows):
            raise UserError(f"--n-labels {n_labels}: class {label} has only {len(rows)} labelled images")
        order = torch.randperm(len(rows), generator=generator)[:quota]
        chosen.extend(rows[i] for i in order.tolist())
    return sorted(chosen)


def labelled_set_id(split: Split, rows: list[int]) -> str:
    """classifier_metrics.csv's labelled_set: a short hash of the run's labelled images' paths, so that
    which seeds trained on the same images can be read off the file."""
    paths = "\n".join(sorted(split.table.loc[rows, "path"]))
    return hashlib.sha256(paths.encode()).hexdigest()[:10]
