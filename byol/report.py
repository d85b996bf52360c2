"""summary.md's text, written from the CSVs the stages wrote: the comparison table with BYOL − random
paired over seeds, the share of the gap to the ceiling, the pretraining's monitor, the wall-clock time
of each stage and the settings. The compute curve's section is byol/report_curve.py's; the figures are
byol/plots.py's job.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from byol.files import read_csv, read_json
from byol.outputs import (
    CEILING_COLUMNS,
    CEILING_CONFIG_FILE,
    CEILING_METRICS_FILE,
    MONITOR_KNNS,
    monitor_label,
    monitor_split,
)
from byol.plots import Ceiling


def mean_and_std(mean: float, std: float, signed: bool = False) -> str:
    """Mean ± std over seeds as text; one seed has no spread (its sample std is NaN), which a
    "± 0.000" would hide."""
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return f"{text} ± {std:.3f}" if math.isfinite(std) else f"{text} (one seed: no spread)"


def paired_text(mean: float, low: float, high: float) -> str:
    """A paired difference and its 95 % interval as text; one seed has no interval."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:+.3f} (one seed: no interval)"
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def interval_text(low: float, high: float) -> str:
    """An interval's bounds, or — when there is none (one seed's t-interval, a bootstrap without the
    per-image predictions)."""
    return f"[{low:+.3f}, {high:+.3f}]" if math.isfinite(low) and math.isfinite(high) else "—"


def read_ceiling(out_dir: Path) -> Ceiling | None:
    """The ceiling's final test accuracy over its seeds, from out_dir's ceiling_metrics.csv (None
    without one). A seed counts once it reached its run's length: ceiling_config.json's run_epochs
    (--epochs, or the length chosen on validation from --finetune-epochs), or, in files from before
    the choice, its epochs."""
    metrics_path = out_dir / CEILING_METRICS_FILE
    if not metrics_path.is_file():
        return None
    remedy = f"run python experiments/ceiling.py RUN_DIR --out-dir {out_dir} again, or delete it"
    metrics = read_csv(metrics_path, CEILING_COLUMNS, remedy)
    settings = read_json(out_dir / CEILING_CONFIG_FILE, remedy)
    epochs = settings.get("run_epochs", settings["epochs"])
    final = metrics[metrics["epoch"] == epochs]
    if final.empty:
        return None
    return Ceiling(
        n_train=int(final["n_train"].iloc[0]),
        seeds=len(final),
        epochs=int(epochs),
        acc_mean=float(final["test_acc"].mean()),
        acc_std=float(final["test_acc"].std()),
    )


def scoring_text(classifier_config: dict) -> str:
    """What summary.md's "test" means for this comparison: the test split, the validation split, or
    the held-out folds of a cross-validation on the labelled images."""
    if classifier_config.get("evaluation") == "cv":
        folds, seeds = classifier_config.get("eval_folds"), classifier_config.get("seeds")
        return (
            f"Scored by {folds}-fold stratified cross-validation on the labelled images, repeated {seeds} "
            "time(s) (one repeat per seed, the same folds for both inits): no test split was held out, "
            'so "test" below is each image\'s prediction by the fold that held it out, and the rates were '
            "chosen inside each fold's training part."
        )
    if classifier_config.get("score_split") == "validation":
        return 'Scored on the validation split (a choosing run): "test" below is validation.'
    return ""


def summary_markdown(
    summary: pd.DataFrame, paired: pd.DataFrame, ceiling: Ceiling | None = None, scoring: str = ""
) -> str:
    """summary.md's comparison: the accuracy table, BYOL − random per mode and label count (paired over
    seeds, with its 95 % interval); with the `ceiling`, its row and the share of the gap to it that
    BYOL closes. plot_results.py adds the pretraining, the compute curve, the wall-clock time of each
    stage and the settings."""
    lines = ["# Random init vs BYOL init", "", *([scoring, ""] if scoring else [])]
    lines += [
        "| labels | mode | init | test accuracy (mean ± std) | rate (seeds) | train loss, last-fifth change "
        "| seeds | epochs |",
        "|---:|---|---|---|---|---|---:|---:|",
    ]
    for row in summary.itertuples():
        accuracy = mean_and_std(row.test_acc_mean, row.test_acc_std)
        edge = f" — {row.seeds_on_edge} on the grid's edge" if row.seeds_on_edge else ""
        loss = f"{row.train_loss_final:.3f}" if math.isfinite(row.train_loss_final) else "—"
        loss += f" ({row.train_loss_change:+.3f})" if math.isfinite(row.train_loss_change) else ""
        rate = f"{row.chosen_lrs or '—'}{edge}"
        lines.append(
            f"| {row.n_labels} | {row.mode} | {row.init} | {accuracy} | {rate} | {loss} "
            f"| {row.seeds} | {row.epochs} |"
        )
    if ceiling is not None:
        accuracy = mean_and_std(ceiling.acc_mean, ceiling.acc_std)
        lines.append(
            f"| {ceiling.n_train} (all, folder labels) | finetune | random (ceiling) | {accuracy} | — | — | "
            f"{ceiling.seeds} | {ceiling.epochs} |"
        )
    lines += [
        "",
        "Rate: the backbone's fine-tuning rate, or the frozen probe's, each chosen by cross-validation on "
        "the labelled images (the test split plays no part); a rate on the edge of every rate the choice "
        "could try is flagged. Train loss: the final epoch's, with its change over the last fifth of "
        "the epochs (near 0: levelled off).",
    ]
    if not paired.empty:
        lines += [
            "",
            "BYOL − random: the mean over seeds of the per-seed difference (both inits of a seed train on "
            "the same labelled images and are scored on the same test images), with two 95 % intervals: "
            "Student's t over seeds, and a paired bootstrap resampling the seeds and the test images "
            "together (it adds the test set's sampling error; — where the per-image predictions were not "
            "kept). A gain or a loss only when the wider interval excludes 0:",
            "",
            "| labels | mode | BYOL − random | 95 % t-interval (seeds) "
            "| 95 % bootstrap (seeds × test images) | verdict | seeds |",
            "|---:|---|---:|---|---|---|---:|",
        ]
        lines += [
            f"| {row.n_labels} | {row.mode} | {row.diff_mean:+.3f} | "
            f"{interval_text(row.ci_low, row.ci_high)} | {interval_text(row.boot_low, row.boot_high)} | "
            f"{row.verdict} | {row.seeds} |"
            for row in paired.sort_values(["n_labels", "mode"], ascending=[False, True]).itertuples()
        ]
    if ceiling is not None and not paired.empty:
        lines += gap_lines(summary, paired, ceiling)
    return "\n".join(lines) + "\n"


def wall_clock_markdown(stage_seconds: dict[str, float]) -> str:
    """The wall-clock time of each stage (stage name → seconds, from the metrics CSVs)."""
    if not stage_seconds:
        return ""
    lines = ["", "## Wall-clock time", "", "| stage | minutes |", "|---|---:|"]
    lines += [f"| {stage} | {seconds / 60:.1f} |" for stage, seconds in stage_seconds.items()]
    return "\n".join(lines) + "\n"


def settings_markdown(classifier_config: dict | None, byol_config: dict | None) -> str:
    """summary.md's last section: the settings files, key by key."""
    lines = ["", "## Settings"]
    if classifier_config is not None:
        lines += ["", "Classifier (`classifier_config.json`):", "", "```"]
        lines += [f"{key}: {value}" for key, value in classifier_config.items() if key != "byol_config"]
        lines += ["```"]
    if byol_config:
        lines += ["", "BYOL pretraining (`byol_config.json`):", "", "```"]
        lines += [f"{key}: {value}" for key, value in byol_config.items()]
        lines += ["```"]
    return "\n".join(lines) + "\n"


def shown_epochs(epochs: list[int]) -> list[int]:
    """The monitor rows summary.md shows: all of a short run; of a long one the random init, the powers
    of two (the log-spaced snapshots) and the last."""
    if len(epochs) <= 13:
        return epochs
    return [epoch for epoch in epochs if epoch & (epoch - 1) == 0 or epoch == epochs[-1]]


def number(value: float, digits: int = 3) -> str:
    return "—" if pd.isna(value) else f"{value:.{digits}f}"


def training_hours(byol_metrics: pd.DataFrame) -> pd.Series:
    """Hours of pretraining up to each row of byol_metrics.csv: training time only (the monitor's
    seconds are a column apart), as summary.md and compute_curve.csv both report it."""
    return byol_metrics["seconds"].fillna(0).cumsum() / 3600


def pretraining_markdown(byol_metrics: pd.DataFrame, byol_config: dict) -> str:
    """summary.md's section on byol_metrics.csv: how far the pretraining went (steps, images, hours,
    images/s, precision; an unfinished run says so) and its monitor at log-spaced epochs."""
    trained = byol_metrics.dropna(subset=["loss"])
    if trained.empty:
        return ""
    last = trained.iloc[-1]
    planned = int(byol_config.get("epochs", last.epoch))
    batch = int(byol_config.get("global_batch_size", byol_config.get("batch_size", 0)))
    speed = trained["images_per_s"].dropna()
    hours = training_hours(byol_metrics)
    monitor_seconds = byol_metrics["monitor_seconds"].dropna()
    monitor = (
        f" ({monitor_seconds.sum() / 3600:.2f} more in the k-NN monitor)" if len(monitor_seconds) else ""
    )
    lines = [
        "",
        "## BYOL pretraining (`byol_metrics.csv`)",
        "",
        f"{int(last.epoch)} of {planned} epochs: {int(last.step):,} steps of {batch} images "
        f"({int(last.step) * batch:,} images seen), {hours.iloc[-1]:.2f} hours of training{monitor}, "
        f"{speed.median():.1f} images/s (median over epochs; {speed.min():.1f}–{speed.max():.1f}), "
        f"precision `{byol_config.get('precision', '?')}`.",
    ]
    if last.epoch < planned:
        lines += [
            "",
            f"**Unfinished**: {planned - int(last.epoch)} epochs to go; `train_byol.py --resume` "
            "continues it.",
        ]
    split = monitor_split(byol_metrics.columns)
    lines += [
        "",
        f"The monitor, scored on {monitor_label(split)}: the k-NN whose voters are the labelled split, the "
        "diagnostic k-NN (5,000 pretraining images vote with their folder labels, k = 20 and 200) and the "
        "features' effective rank. Epoch 0 is the random init.",
        "",
        "| epoch | steps | hours | loss | k-NN, labelled voters | k-NN k=20 | k-NN k=200 | rank |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = byol_metrics.assign(hours=hours).set_index("epoch")
    for epoch in shown_epochs(rows.index.tolist()):
        row = rows.loc[epoch]
        knns = " | ".join(number(row[f"{split}_{name}"]) for name in MONITOR_KNNS)
        lines.append(
            f"| {epoch} | {int(row.step):,} | {row.hours:.2f} | {number(row.loss)} | {knns} | "
            f"{number(row.feature_rank, 0)} |"
        )
    return "\n".join(lines) + "\n"


def gap_lines(summary: pd.DataFrame, paired: pd.DataFrame, ceiling: Ceiling) -> list[str]:
    """BYOL − random as a share of the gap between random init and the ceiling, per mode and labels."""
    random = summary[summary["init"] == "random"].set_index(["mode", "n_labels"])["test_acc_mean"]
    lines = [
        "",
        "## The gap to the ceiling",
        "",
        f"The ceiling: random init fine-tuned on all {ceiling.n_train:,} images outside the held-out "
        "splits, with their folder labels (labels this low-label setting does not have), "
        f"{mean_and_std(ceiling.acc_mean, ceiling.acc_std)} over {ceiling.seeds} seed(s). The share of the "
        "gap between random init and the ceiling that BYOL closes: BYOL − random and its wider interval "
        "divided by (ceiling − random mean); the ceiling's own spread is not in the interval.",
        "",
        "| labels | mode | random init | gap to the ceiling | share BYOL closes [95 % interval] |",
        "|---:|---|---:|---:|---|",
    ]
    for row in paired.sort_values(["n_labels", "mode"], ascending=[False, True]).itertuples():
        base = random.get((row.mode, row.n_labels), math.nan)
        gap = ceiling.acc_mean - base
        share = paired_text(row.diff_mean / gap, row.low / gap, row.high / gap) if gap > 0 else "—"
        lines.append(f"| {row.n_labels} | {row.mode} | {base:.3f} | {gap:+.3f} | {share} |")
    return lines


def stage_seconds(byol_metrics: pd.DataFrame | None, classifier_metrics: pd.DataFrame) -> dict[str, float]:
    """Seconds spent per stage, summed over the per-epoch `seconds` the training scripts record."""
    stages = {
        "BYOL pretraining (`byol_metrics.csv`)": byol_metrics,
        "classifiers, all runs (`classifier_metrics.csv`)": classifier_metrics,
    }
    return {
        stage: float(frame["seconds"].sum())
        for stage, frame in stages.items()
        if frame is not None and frame["seconds"].notna().any()
    }


def format_summary(summary: pd.DataFrame, paired: pd.DataFrame | None = None) -> str:
    """One line per condition: init, mode, labels, test accuracy mean +- std over seeds; then BYOL −
    random per mode and label count, paired over seeds, with the wider of its two 95 % intervals and
    what to call it."""
    lines = []
    for row in summary.itertuples():
        accuracy = mean_and_std(row.test_acc_mean, row.test_acc_std)
        lines.append(
            f"{row.init:>6} {row.mode:>8}  n={row.n_labels:<4} test_acc {accuracy}  "
            f"({row.seeds} seed{'s' * (row.seeds > 1)}, {row.epochs} epochs)"
        )
    for row in [] if paired is None else paired.itertuples():
        difference = paired_text(row.diff_mean, row.low, row.high)
        lines.append(
            f"BYOL - random {row.mode:>8}  n={row.n_labels:<4} {difference}  {row.verdict} "
            f"({row.seeds} paired seed{'s' * (row.seeds > 1)})"
        )
    return "\n".join(lines)
