"""The comparison grid: {random, byol} x {finetune, frozen} x seeds x label counts, and its summary.

Writes classifier_metrics.csv (one row per run and epoch), classifier_summary.csv (final test accuracy
mean and std over seeds per condition) and classifier_config.json; resumes by skipping completed runs.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from byol.cache import check_view_size, default_cache_size, load_cache
from byol.data import Split, read_split
from byol.device import MEMORY_FORMAT, resolve_precision
from byol.distributed import Ranks, process_group
from byol.errors import UserError
from byol.evaluate import extract_features
from byol.files import read_csv, read_json, write_csv, write_json
from byol.finetune import (
    INITS,
    MODES,
    ClassifierConfig,
    balanced_subset,
    images_per_step,
    load_byol_backbone,
    make_backbone,
    train_one_run,
)
from byol.model import MIN_BATCH_SIZE, MIN_BATCH_SIZE_REASON
from byol.plots import mean_and_std
from byol.pretrain import PretrainConfig
from byol.resume import check_fresh_start

METRICS_FILE = "classifier_metrics.csv"
SUMMARY_FILE = "classifier_summary.csv"
CONFIG_FILE = "classifier_config.json"
METRIC_COLUMNS = [
    "init",
    "mode",
    "seed",
    "n_labels",
    "epoch",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "seconds",
    "head_lr",
]
# What every version of classifier_metrics.csv holds (seconds and head_lr were added later).
REQUIRED_METRIC_COLUMNS = METRIC_COLUMNS[: METRIC_COLUMNS.index("test_acc") + 1]
# Settings only the frozen runs depend on: --resume with other values retrains those runs, keeps the rest.
FROZEN_ONLY_SETTINGS = ("probe_lrs",)


def resolve_sizes(config: ClassifierConfig, byol_config: dict) -> ClassifierConfig:
    """Train at BYOL's image size (and reuse its cache) unless told otherwise."""
    image_size = config.image_size or byol_config.get("image_size") or PretrainConfig().image_size
    cache_size = config.cache_size
    if not cache_size:
        same_size = byol_config.get("image_size") == image_size
        cache_size = (
            byol_config["cache_size"]
            if same_size and byol_config.get("cache_size")
            else default_cache_size(image_size)
        )
    check_view_size(image_size, cache_size)
    return ClassifierConfig(**{**asdict(config), "image_size": image_size, "cache_size": cache_size})


def check_config(config: ClassifierConfig) -> None:
    if config.batch_size < MIN_BATCH_SIZE:
        raise UserError(f"--batch-size {config.batch_size}: {MIN_BATCH_SIZE_REASON}")
    if not config.probe_lrs or not all(math.isfinite(lr) and lr > 0 for lr in config.probe_lrs):
        raise UserError(f"--probe-lrs {config.probe_lrs}: give one or more learning rates above 0")
    for flag, values, allowed in (("--inits", config.inits, INITS), ("--modes", config.modes, MODES)):
        unknown = [value for value in values if value not in allowed]
        if unknown or not values:
            raise UserError(f"{flag} {','.join(values)}: choose from {','.join(allowed)}")


def check_labelled(split: Split, config: ClassifierConfig, world_size: int) -> None:
    """Before the first run trains, so that no count fails hours into the grid: every class has a
    labelled image, and every --n-labels gives each fine-tuning process the two images BatchNorm needs."""
    present = set(split.table.loc[split.indices("labelled"), "label"])
    missing = [name for label, name in enumerate(split.classes) if label not in present]
    if missing:
        raise UserError(
            f"the split has no labelled image of {', '.join(missing)}; re-run data_split.py with "
            f"--n-labelled {len(split.classes)} or more"
        )
    least = images_per_step(world_size, "finetune" in config.modes)
    for n_labels in config.n_labels:
        n_images = len(balanced_subset(split, n_labels, seed=0))  # raises for an impossible count
        if n_images < least:
            raise UserError(
                f"--n-labels {n_images}: fine-tuning in {world_size} process(es) needs {least} labelled "
                f"images or more ({MIN_BATCH_SIZE} per process, for BatchNorm)"
            )


def summarize(metrics: pd.DataFrame) -> pd.DataFrame:
    """Final-epoch test accuracy and loss per condition: mean and std (sample, over seeds)."""
    final = metrics.loc[metrics.groupby(["init", "mode", "n_labels", "seed"])["epoch"].idxmax()]
    summary = final.groupby(["init", "mode", "n_labels"], sort=False).agg(
        seeds=("seed", "nunique"),
        epochs=("epoch", "max"),
        test_acc_mean=("test_acc", "mean"),
        test_acc_std=("test_acc", "std"),
        test_loss_mean=("test_loss", "mean"),
        test_loss_std=("test_loss", "std"),
    )
    summary = summary.reset_index()
    order = {name: i for i, name in enumerate(INITS + MODES)}
    return summary.sort_values(
        ["n_labels", "init", "mode"],
        key=lambda c: c.map(order) if c.name != "n_labels" else c,
        ignore_index=True,
    )


def run_classifiers(
    config: ClassifierConfig,
    out_dir: Path,
    device_name: str = "auto",
    precision_name: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Train every condition, write classifier_metrics.csv and classifier_summary.csv, return the summary.

    With `resume`, conditions already complete in classifier_metrics.csv (same settings) are kept; an
    earlier classifier_metrics.csv needs `resume` or `overwrite` (start over).
    Under torchrun every process calls this; fine-tuning is data-parallel, rank 0 writes the files.
    """
    check_config(config)
    check_fresh_start(Path(out_dir), (METRICS_FILE,), resume, overwrite)
    with process_group(device_name) as (ranks, device):
        return _run_classifiers(config, Path(out_dir), ranks, device, precision_name, resume)


def _run_classifiers(
    config: ClassifierConfig,
    out_dir: Path,
    ranks: Ranks,
    device: torch.device,
    precision_name: str,
    resume: bool,
) -> pd.DataFrame:
    precision = resolve_precision(precision_name, device)
    split = read_split(out_dir)
    byol_state, byol_config = None, {}
    if "byol" in config.inits:
        byol_backbone, byol_config = load_byol_backbone(out_dir)
        byol_state = byol_backbone.state_dict()
    config = resolve_sizes(config, byol_config)
    test_rows = split.indices("test")
    if not test_rows:
        raise UserError("the split has no test images; re-run data_split.py with --n-test above 0")
    check_labelled(split, config, ranks.world_size)
    images = load_cache(split, out_dir, config.cache_size, torch.device("cpu"), ranks)  # (N, 3, S, S) uint8
    labels = torch.tensor(split.table["label"].to_numpy())
    fmt = MEMORY_FORMAT

    settings = {
        key: value
        for key, value in asdict(config).items()
        if key not in ("inits", "modes", "seeds", "n_labels")
    }
    settings["world_size"] = ranks.world_size  # with batch_size, fixes the global batch
    metrics_path = out_dir / METRICS_FILE
    rows: list[dict] = []
    config_path = out_dir / CONFIG_FILE
    if resume and metrics_path.is_file() and config_path.is_file():
        previous = read_json(config_path, "start over with --overwrite")
        if (previous.get("byol_config") or byol_config) != byol_config:  # {}: no BYOL runs before
            raise UserError(
                f"--resume: {metrics_path} was trained on another pretraining (byol.pt's settings differ); "
                "start over with --overwrite"
            )
        changed = [key for key, value in settings.items() if previous.get(key) != value]
        for key in changed:
            if key not in FROZEN_ONLY_SETTINGS:
                name = "processes" if key == "world_size" else "--" + key.replace("_", "-")
                raise UserError(
                    f"--resume: {metrics_path} was trained with {name} {previous.get(key)}, this run has "
                    f"{settings[key]}; resume with the same settings, or start over with --overwrite"
                )
        rows = read_csv(metrics_path, REQUIRED_METRIC_COLUMNS, "start over with --overwrite").to_dict(
            "records"
        )
        if changed:  # only the linear probes' settings: keep the fine-tuning runs, retrain the probes
            rows = [row for row in rows if row["mode"] != "frozen"]
        for row in rows:  # runs from before head_lr was recorded: their settings were checked equal above
            if row["mode"] == "finetune" and pd.isna(row.get("head_lr")):
                row["head_lr"] = config.head_lr
    if ranks.is_main:
        write_json(
            config_path,
            {
                **asdict(config),
                "device": str(device),
                "precision": precision,
                "world_size": ranks.world_size,
                "byol_config": byol_config,
            },
        )
    epochs_done: dict[tuple, int] = {}
    for row in rows:
        key = (row["init"], row["mode"], row["seed"], row["n_labels"])
        epochs_done[key] = epochs_done.get(key, 0) + 1

    runs = [
        (n, seed, init, mode)
        for n in config.n_labels
        for seed in range(config.seeds)
        for init in config.inits
        for mode in config.modes
    ]
    frozen_features: dict[tuple, torch.Tensor] = {}
    feature_rows = split.indices("labelled") + test_rows
    progress = tqdm(runs, desc="classifiers", unit="run", disable=not ranks.is_main)
    for n_labels, seed, init, mode in progress:
        train_rows = balanced_subset(split, n_labels, seed)
        key = (init, mode, seed, len(train_rows))
        if epochs_done.get(key) == config.epochs:
            continue
        rows = [row for row in rows if (row["init"], row["mode"], row["seed"], row["n_labels"]) != key]
        progress.set_description(f"{init} {mode} seed {seed} n={len(train_rows)}")
        backbone = make_backbone(init, seed, byol_state)
        if mode == "frozen":
            # Features depend on the backbone only: once per BYOL backbone, once per random seed.
            feature_key = (init,) if init == "byol" else (init, seed)
            if feature_key not in frozen_features:
                features = extract_features(
                    backbone.to(device, memory_format=fmt),
                    images,
                    feature_rows,
                    config.image_size,
                    device,
                    precision,
                    memory_format=fmt,
                ).cpu()
                frozen_features[feature_key] = dict(zip(feature_rows, features))
            lookup = frozen_features[feature_key]
            train_inputs = torch.stack([lookup[row] for row in train_rows])
            test_inputs = torch.stack([lookup[row] for row in test_rows])
        else:
            train_inputs, test_inputs = images[train_rows], images[test_rows]
        run_rows = train_one_run(
            backbone,
            train_inputs,
            labels[train_rows],
            test_inputs,
            labels[test_rows],
            mode,
            seed,
            len(split.classes),
            config,
            device,
            precision,
            progress,
            ranks,
        )
        rows.extend(
            {"init": init, "mode": mode, "seed": seed, "n_labels": len(train_rows), **row} for row in run_rows
        )
        if ranks.is_main:
            write_csv(metrics_path, pd.DataFrame(rows, columns=METRIC_COLUMNS))
    progress.close()
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    summary = summarize(metrics)
    if ranks.is_main:
        write_csv(out_dir / SUMMARY_FILE, summary)
    return summary


def format_summary(summary: pd.DataFrame) -> str:
    """One line per condition: init, mode, labels, test accuracy mean +- std over seeds."""
    lines = []
    for row in summary.itertuples():
        accuracy = mean_and_std(row.test_acc_mean, row.test_acc_std)
        lines.append(
            f"{row.init:>6} {row.mode:>8}  n={row.n_labels:<4} test_acc {accuracy}  "
            f"({row.seeds} seed{'s' * (row.seeds > 1)}, {row.epochs} epochs)"
        )
    return "\n".join(lines)
