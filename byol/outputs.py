"""The files the stages write and the columns their CSVs hold: what the report reads.

Importable without torch, like everything plot_results.py imports (byol.report, byol.plots,
byol.stats, byol.files): redrawing the committed figures takes seconds, not the 10-20 s that
importing torch and torchvision costs a new process on a small CPU.
"""

from __future__ import annotations

# Stage 2, train_byol.py
BYOL_CONFIG_FILE = "byol_config.json"
BYOL_METRICS_FILE = "byol_metrics.csv"
BYOL_METRIC_COLUMNS = [  # byol_metrics.csv, one row per epoch (0: the random init)
    "epoch",
    "step",
    "loss",
    "tau",
    "lr",
    "knn_acc",
    "diag_knn_k20",
    "diag_knn_k200",
    "feature_std",
    "feature_rank",
    "monitor_seconds",
    "images_per_s",
    "seconds",
]

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
CLASSIFIER_METRIC_COLUMNS = ["init", "mode", "seed", "n_labels", *EPOCH_COLUMNS]
CLASSIFIER_SUMMARY_FILE = "classifier_summary.csv"
PAIRED_FILE = "classifier_paired.csv"

# python -m byol.ceiling: all non-test images with their folder labels
CEILING_CONFIG_FILE = "ceiling_config.json"
CEILING_METRICS_FILE = "ceiling_metrics.csv"
CEILING_COLUMNS = ["seed", "n_train", *EPOCH_COLUMNS]

# python -m byol.compute_curve: each snapshot of a long pretraining, scored
CURVE_FILE = "compute_curve.csv"
CURVE_FIGURE = "compute_curve.png"
CURVE_COLUMNS = [  # what plot_compute_curve and curve_markdown read
    "epoch",
    "images_seen",
    "hours",
    "diag_knn_k20",
    "diag_knn_k200",
    "feature_rank",
    "probe_verdict",
    "probe_n_labels",
    "probe_byol",
    "probe_random",
    "probe_diff",
    "probe_diff_low",
    "probe_diff_high",
]
