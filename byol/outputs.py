"""The files the stages write and the columns their CSVs hold: what the report reads.

Importable without torch, like everything plot_results.py imports (byol.report, byol.plots,
byol.stats, byol.files): redrawing the committed figures takes seconds, not the 10-20 s that
importing torch and torchvision costs a new process on a small CPU.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from byol.errors import UserError
from byol.files import read_csv

# Stage 2, train_byol.py
BYOL_CONFIG_FILE = "byol_config.json"
BYOL_METRICS_FILE = "byol_metrics.csv"
BYOL_METRIC_COLUMNS = [  # byol_metrics.csv, one row per epoch (0: the random init)
    "epoch",
    "step",
    "loss",
    "tau",
    "lr",
    "val_knn_labelled",
    "val_knn_k20",
    "val_knn_k200",
    "feature_std",
    "feature_rank",
    "monitor_seconds",
    "images_per_s",
    "seconds",
]

# The monitor's k-NN columns name the split whose images they classify: `val_` since the validation
# split exists; `test_` in the files of runs monitored before it (the first long run, the 12-epoch study,
# the first recipe search), whose columns were relabelled so that no file hides what it scored.
MONITOR_SPLITS = ("val", "test")
MONITOR_KNNS = ("knn_labelled", "knn_k20", "knn_k200")  # voters: the labelled split; 20 or 200 diagnostic


def monitor_split(columns) -> str:
    """The split a byol_metrics.csv (or compute_curve.csv) table's k-NN columns classified: val or test."""
    for split in MONITOR_SPLITS:
        if f"{split}_knn_k20" in columns:
            return split
    return MONITOR_SPLITS[0]


def monitor_label(split: str) -> str:
    return {"val": "validation", "test": "test (monitored before the validation split)"}[split]


def read_monitor_table(path: Path, columns: list[str], remedy: str) -> pd.DataFrame:
    """byol_metrics.csv or compute_curve.csv with at least `columns`, whose val_ k-NN columns may be
    test_ ones in a file monitored before the validation split (see MONITOR_SPLITS)."""
    frame = read_csv(path, [column for column in columns if not column.startswith("val_")], remedy)
    split = monitor_split(frame.columns)
    wanted = [f"{split}_{column.removeprefix('val_')}" for column in columns if column.startswith("val_")]
    missing = [column for column in wanted if column not in frame.columns]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; {remedy}")
    return frame


# Stage 3, train_classifier.py: the comparison grid
INITS = ("random", "byol")
MODES = ("finetune", "frozen")
# What a classifier run's metrics row holds, one per epoch (test_loss and test_acc NaN between evaluations).
EPOCH_COLUMNS = [
    "epoch",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "seconds",
    "head_lr",
    "backbone_lr",
]
CLASSIFIER_CONFIG_FILE = "classifier_config.json"
CLASSIFIER_METRICS_FILE = "classifier_metrics.csv"
# labelled_set: a short hash of the run's labelled images (finetune.labelled_set_id)
# bn_recalibrated: a frozen random backbone whose BatchNorm statistics were recomputed on unlabelled
# images, because that scored higher on the validation split (comparison.Grid.frozen_random)
CLASSIFIER_METRIC_COLUMNS = [
    "init",
    "mode",
    "seed",
    "n_labels",
    "labelled_set",
    "bn_recalibrated",
    *EPOCH_COLUMNS,
]
CLASSIFIER_SUMMARY_FILE = "classifier_summary.csv"
PAIRED_FILE = "classifier_paired.csv"
# Every run's final predicted class per test image: one row per test image (its cache row and label),
# one column per run (prediction_column), for the paired bootstrap over seeds and test images.
PREDICTIONS_FILE = "classifier_predictions.csv"
PREDICTION_INDEX = ["row", "label"]


def prediction_column(init: str, mode: str, n_labels: int, seed: int) -> str:
    """classifier_predictions.csv's column of one run."""
    return f"{init}_{mode}_n{int(n_labels)}_seed{int(seed)}"


# python experiments/ceiling.py: every image outside the held-out splits, with its folder label
CEILING_CONFIG_FILE = "ceiling_config.json"
CEILING_METRICS_FILE = "ceiling_metrics.csv"
CEILING_COLUMNS = ["seed", "n_train", *EPOCH_COLUMNS]
# The ceiling's rate and length candidates, each scored on validation: kept as they finish, so that a
# choice interrupted before its seeds (hours at full size) resumes from the last candidate scored.
CEILING_CHOICES_FILE = "ceiling_choices.csv"
CEILING_CHOICE_COLUMNS = ["lr", "epochs", "val_acc", "val_loss"]

# python experiments/compute_curve.py: each snapshot of a long pretraining, scored
CURVE_FILE = "compute_curve.csv"
CURVE_SEEDS_FILE = "compute_curve_seeds.csv"  # its probe accuracies per seed (experiments/compute_curve.py)
CURVE_SEED_COLUMNS = ["epoch", "seed", "probe_byol", "probe_random"]
CURVE_FIGURE = "compute_curve.png"
CURVE_COLUMNS = [  # what plot_compute_curve and curve_markdown read
    "epoch",
    "images_seen",
    "hours",
    "val_knn_k20",
    "val_knn_k200",
    "feature_rank",
    "probe_verdict",
    "probe_n_labels",
    "probe_byol",
    "probe_random",
    "probe_diff",
    "probe_diff_low",
    "probe_diff_high",
]
