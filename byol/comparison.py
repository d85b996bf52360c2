"""The comparison grid: {random, byol} x {finetune, frozen} x seeds x label counts, and its summary.

Writes classifier_metrics.csv (one row per run and epoch), classifier_summary.csv (final test accuracy
mean and std over seeds per condition) and classifier_config.json; resumes by skipping completed runs.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from byol.budget import finish_time, format_duration
from byol.cache import load_cache
from byol.data import Split, read_split
from byol.device import resolve_precision
from byol.distributed import Ranks, Runtime, process_group
from byol.errors import UserError
from byol.evaluate import extract_features
from byol.files import read_csv, read_json, write_csv, write_json
from byol.finetune import (
    INITS,
    MODES,
    ClassifierConfig,
    balanced_subset,
    choose_finetune_lr,
    cv_training_size,
    fine_tune,
    images_per_step,
    load_byol_backbone,
    make_backbone,
    train_probe,
)
from byol.model import MIN_BATCH_SIZE, resnet18_backbone
from byol.plots import mean_and_std, paired_text
from byol.resume import check_fresh_start
from byol.stats import paired_differences

log = logging.getLogger(__name__)

CLASSIFIER_METRICS_FILE = "classifier_metrics.csv"
CLASSIFIER_SUMMARY_FILE = "classifier_summary.csv"
PAIRED_FILE = "classifier_paired.csv"
CLASSIFIER_CONFIG_FILE = "classifier_config.json"
CLASSIFIER_METRIC_COLUMNS = [
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
    "backbone_lr",
]


def frozen_only_settings(config: ClassifierConfig) -> tuple[str, ...]:
    """Settings only the frozen runs depend on: --resume with other values retrains those runs and
    keeps the rest. With --lp-ft the fine-tuning runs start from the probe, so none."""
    return () if config.lp_ft else ("probe_lrs",)


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
    finetune = "finetune" in config.modes
    least = images_per_step(world_size, finetune)
    choosing = finetune and len(config.finetune_lrs) > 1
    for n_labels in config.n_labels:
        n_images = len(balanced_subset(split, n_labels, seed=0))  # raises for an impossible count
        if n_images < least:
            raise UserError(
                f"--n-labels {n_images}: fine-tuning in {world_size} process(es) needs {least} labelled "
                f"images or more ({MIN_BATCH_SIZE} per process, for BatchNorm)"
            )
        if choosing and cv_training_size(n_images, config.finetune_folds) < least:
            raise UserError(
                f"--n-labels {n_images}: too few to choose the fine-tuning rate by {config.finetune_folds}-"
                f"fold cross-validation (each fold fine-tunes on {least} images or more); lower "
                "--finetune-folds or pass one --finetune-lrs value"
            )


def final_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its last epoch."""
    return metrics.loc[metrics.groupby(["init", "mode", "n_labels", "seed"])["epoch"].idxmax()]


def paired_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """BYOL − random per (label count, mode): the mean per-seed paired difference and its 95 % interval."""
    return paired_differences(final_rows(metrics))


def summarize(metrics: pd.DataFrame) -> pd.DataFrame:
    """Final-epoch test accuracy and loss per condition: mean and std (sample, over seeds)."""
    final = final_rows(metrics)
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


def finetune_choice_key(config: ClassifierConfig, init: str, n_labels: int, seed: int) -> tuple:
    """Which fine-tuning runs share one cross-validated rate: every seed of an (init, label count), on
    seed 0's folds (3 rates x 3 folds on two thirds of the images: about 5 runs' time per choice,
    measured at 250 labels), unless --cv-every-seed."""
    return (init, int(n_labels), int(seed)) if config.cv_every_seed else (init, int(n_labels))


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
    config.check()
    check_fresh_start(Path(out_dir), (CLASSIFIER_METRICS_FILE,), resume, overwrite)
    with process_group(device_name) as (ranks, device):
        return _run_classifiers(config, Path(out_dir), ranks, device, precision_name, resume)


@dataclass(frozen=True)
class GridSpeed:
    """What stage 3's work costs on this machine: a fine-tuning step of one global batch, and scoring
    (a backbone's forward pass) per image."""

    step_seconds: float
    score_images_per_s: float


def measure_grid_speed(
    images: torch.Tensor, labels: torch.Tensor, n_classes: int, config: ClassifierConfig, runtime: Runtime
) -> GridSpeed:
    """Time a few fine-tuning steps and a scoring pass of a fresh random backbone on the run's own
    images, batch, size and precision (the global random number generators are left as they were)."""
    n = min(len(images), config.batch_size * runtime.ranks.world_size)
    trial = replace(config, epochs=1, eval_every=1, finetune_lrs=[1e-4], lp_ft=False)
    silent = tqdm(disable=True)
    with torch.random.fork_rng(devices=[runtime.device] if runtime.device.type == "cuda" else []):
        backbone = resnet18_backbone()
        for repeats in (1, 3):  # a warm-up step, then 3 timed steps
            started = time.perf_counter()
            rows = torch.arange(repeats * n) % len(images)
            data = (images[rows], labels[rows], images[:n], labels[:n])
            fine_tune(backbone, *data, 0, n_classes, trial, runtime, silent)
            seconds = time.perf_counter() - started
        started = time.perf_counter()
        extract_features(
            backbone, images, list(range(n)), config.image_size, runtime.device, runtime.precision
        )
        score_rate = n / (time.perf_counter() - started)
    return GridSpeed(max(seconds - n / score_rate, 1e-6) / 3, score_rate)


def grid_seconds(
    speed: GridSpeed,
    config: ClassifierConfig,
    global_batch: int,
    n_test: int,
    finetune_runs: list[int],
    feature_passes: list[int],
    choices: list[int],
) -> float:
    """Estimated seconds of stage 3's remaining work at the measured speed, from its parts' image
    counts: fine-tuning runs (labelled images each; scored on the test images every eval_every epochs),
    backbone feature passes (frozen mode: images each, once per random seed and once for BYOL), and
    fine-tuning rate choices (labelled images each: rates x folds fine-tunings on the folds' rest).
    The linear probes themselves take seconds and are not counted."""

    def finetune_seconds(n_train: int, n_scored: int, evals: int) -> float:
        steps = config.epochs * math.ceil(n_train / global_batch)
        return steps * speed.step_seconds + evals * n_scored / speed.score_images_per_s

    epochs = range(1, config.epochs + 1)
    evals = sum(1 for epoch in epochs if epoch % config.eval_every == 0 or epoch == config.epochs)
    total = sum(finetune_seconds(n, n_test, evals) for n in finetune_runs)
    if config.lp_ft:  # the probe's features first
        total += sum(finetune_runs) / speed.score_images_per_s
    total += sum(feature_passes) / speed.score_images_per_s
    for n in choices:
        held_out = math.ceil(n / config.finetune_folds)
        folds = config.finetune_folds * len(config.finetune_lrs)
        total += folds * finetune_seconds(n - held_out, held_out, 1)
    return total


def plan_line(
    config: ClassifierConfig,
    split: Split,
    runs: list[tuple],
    epochs_done: dict[tuple, int],
    finetune_lrs: dict[tuple, float],
    images: torch.Tensor,
    labels: torch.Tensor,
    runtime: Runtime,
) -> str:
    """What stage 3 is about to train, and how long that will take at the speed measured here."""
    pending, finetune_runs, feature_passes, choices = 0, [], {}, {}
    n_features = len(split.indices("labelled")) + len(split.indices("test"))
    for n_labels, seed, init, mode in runs:
        n = len(balanced_subset(split, n_labels, seed))
        if epochs_done.get((init, mode, seed, n)) == config.epochs:
            continue
        pending += 1
        if mode == "frozen":
            feature_passes[(init,) if init == "byol" else (init, seed)] = n_features
            continue
        finetune_runs.append(n)
        key = finetune_choice_key(config, init, n, seed)
        if len(config.finetune_lrs) > 1 and key not in finetune_lrs:
            choices[key] = n
    done = len(runs) - pending
    counts = (
        f"{len(runs)} runs ({len(config.inits)} inits x {len(config.modes)} modes x {config.seeds} seeds x "
        f"{len(config.n_labels)} label counts)" + (f", {done} already done" if done else "")
    )
    if not pending:
        return f"plan: {counts}: nothing left to train"
    labelled = split.indices("labelled")
    speed = measure_grid_speed(images[labelled], labels[labelled], len(split.classes), config, runtime)
    global_batch = config.batch_size * runtime.ranks.world_size
    seconds = grid_seconds(
        speed,
        config,
        global_batch,
        len(split.indices("test")),
        finetune_runs,
        list(feature_passes.values()),
        list(choices.values()),
    )
    rates = len(config.finetune_lrs)
    cv = f", {len(choices)} fine-tuning rate choices ({rates} rates x {config.finetune_folds} folds)"
    return (
        f"plan: {counts}{cv if choices else ''}; {runtime.precision} on {runtime.device}. Measured here: "
        f"{speed.step_seconds:.2f} s per fine-tuning step of {global_batch} and "
        f"{speed.score_images_per_s:.0f} images/s scoring; about {format_duration(seconds)}, finishing "
        f"about {finish_time(seconds)}"
    )


def finished_rows(config: ClassifierConfig, out_dir: Path, byol_config: dict, world_size: int) -> list[dict]:
    """--resume: the metrics rows of the earlier run in `out_dir` that this one keeps.

    Refused (one line) when the earlier run trained on another byol.pt, or with another setting or
    number of processes; a change of the frozen-only settings keeps the fine-tuning runs only.
    """
    metrics_path, config_path = out_dir / CLASSIFIER_METRICS_FILE, out_dir / CLASSIFIER_CONFIG_FILE
    if not (metrics_path.is_file() and config_path.is_file()):
        return []
    settings = {
        key: value
        for key, value in asdict(config).items()
        if key not in ("inits", "modes", "seeds", "n_labels")
    }
    settings["world_size"] = world_size  # with batch_size, fixes the global batch
    previous = read_json(config_path, "start over with --overwrite")
    if (previous.get("byol_config") or byol_config) != byol_config:  # {}: no BYOL runs before
        raise UserError(
            f"--resume: {metrics_path} was trained on another pretraining (byol.pt's settings differ); "
            "start over with --overwrite"
        )
    changed = [key for key, value in settings.items() if previous.get(key) != value]
    for key in changed:
        if key not in frozen_only_settings(config):
            name = "processes" if key == "world_size" else "--" + key.replace("_", "-")
            raise UserError(
                f"--resume: {metrics_path} was trained with {name} {previous.get(key)}, this run has "
                f"{settings[key]}; resume with the same settings, or start over with --overwrite"
            )
    rows = read_csv(metrics_path, CLASSIFIER_METRIC_COLUMNS, "start over with --overwrite").to_dict("records")
    if changed:  # only the linear probes' settings: keep the fine-tuning runs, retrain the probes
        rows = [row for row in rows if row["mode"] != "frozen"]
    return rows


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
    config = config.resolved(byol_config)
    test_rows = split.indices("test")
    if not test_rows:
        raise UserError("the split has no test images; re-run data_split.py with --n-test above 0")
    check_labelled(split, config, ranks.world_size)
    images = load_cache(split, out_dir, config.cache_size, torch.device("cpu"), ranks)  # (N, 3, S, S) uint8
    labels = torch.tensor(split.table["label"].to_numpy())
    n_classes = len(split.classes)
    runtime = Runtime(device, precision, ranks)
    fmt = runtime.memory_format

    metrics_path = out_dir / CLASSIFIER_METRICS_FILE
    config_path = out_dir / CLASSIFIER_CONFIG_FILE
    rows = finished_rows(config, out_dir, byol_config, ranks.world_size) if resume else []
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
    # The fine-tuning rate per (init, label count), or per (init, label count, seed) with
    # --cv-every-seed: kept from the runs already complete, else chosen when first needed.
    finetune_lrs: dict[tuple, float] = {
        finetune_choice_key(config, row["init"], row["n_labels"], row["seed"]): row["backbone_lr"]
        for row in rows
        if row["mode"] == "finetune"
    }
    feature_rows = split.indices("labelled") + test_rows
    log.info(plan_line(config, split, runs, epochs_done, finetune_lrs, images, labels, runtime))
    progress = tqdm(runs, desc="classifiers", unit="run", disable=not ranks.is_main)
    for n_labels, seed, init, mode in progress:
        train_rows = balanced_subset(split, n_labels, seed)
        key = (init, mode, seed, len(train_rows))
        if epochs_done.get(key) == config.epochs:
            continue
        rows = [row for row in rows if (row["init"], row["mode"], row["seed"], row["n_labels"]) != key]
        progress.set_description(f"{init} {mode} seed {seed} n={len(train_rows)}")
        run_config = config
        if mode == "finetune":
            choice = finetune_choice_key(config, init, len(train_rows), seed)
            if choice not in finetune_lrs:
                cv_seed = seed if config.cv_every_seed else 0
                cv_rows = balanced_subset(split, n_labels, cv_seed)
                finetune_lrs[choice] = choose_finetune_lr(
                    init,
                    cv_seed,
                    byol_state,
                    images[cv_rows],
                    labels[cv_rows],
                    n_classes,
                    config,
                    runtime,
                    progress,
                )
            run_config = replace(config, finetune_lrs=[finetune_lrs[choice]])
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
        if mode == "frozen":
            run_rows = train_probe(
                train_inputs, labels[train_rows], test_inputs, labels[test_rows], seed, n_classes, run_config,
                runtime, progress,
            )  # fmt: skip
        else:
            run_rows = fine_tune(
                backbone, train_inputs, labels[train_rows], test_inputs, labels[test_rows], seed, n_classes,
                run_config, runtime, progress,
            )  # fmt: skip
        rows.extend(
            {"init": init, "mode": mode, "seed": seed, "n_labels": len(train_rows), **row} for row in run_rows
        )
        if ranks.is_main:
            write_csv(metrics_path, pd.DataFrame(rows, columns=CLASSIFIER_METRIC_COLUMNS))
    progress.close()
    metrics = pd.DataFrame(rows, columns=CLASSIFIER_METRIC_COLUMNS)
    summary = summarize(metrics)
    if ranks.is_main:
        write_csv(out_dir / CLASSIFIER_SUMMARY_FILE, summary)
        write_csv(out_dir / PAIRED_FILE, paired_summary(metrics))
    return summary


def format_summary(summary: pd.DataFrame, paired: pd.DataFrame | None = None) -> str:
    """One line per condition: init, mode, labels, test accuracy mean +- std over seeds; then BYOL −
    random per mode and label count, paired over seeds, with its 95 % interval and what to call it."""
    lines = []
    for row in summary.itertuples():
        accuracy = mean_and_std(row.test_acc_mean, row.test_acc_std)
        lines.append(
            f"{row.init:>6} {row.mode:>8}  n={row.n_labels:<4} test_acc {accuracy}  "
            f"({row.seeds} seed{'s' * (row.seeds > 1)}, {row.epochs} epochs)"
        )
    for row in [] if paired is None else paired.itertuples():
        difference = paired_text(row.diff_mean, row.ci_low, row.ci_high)
        lines.append(
            f"BYOL - random {row.mode:>8}  n={row.n_labels:<4} {difference}  {row.verdict} "
            f"({row.seeds} paired seed{'s' * (row.seeds > 1)})"
        )
    return "\n".join(lines)
