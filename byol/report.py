"""summary.md's text, written from the CSVs the stages wrote: the comparison table with BYOL − random
paired over seeds, the share of the gap to the ceiling, the pretraining's monitor, the wall-clock time
of each stage and the settings. The figures are byol/plots.py's job.
"""

from __future__ import annotations

import math

import pandas as pd

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


def summary_markdown(summary: pd.DataFrame, paired: pd.DataFrame, ceiling: Ceiling | None = None) -> str:
    """summary.md's comparison: the accuracy table, BYOL − random per mode and label count (paired over
    seeds, with its 95 % interval); with the `ceiling`, its row and the share of the gap to it that
    BYOL closes. plot_results.py adds the pretraining, the compute curve, the wall-clock time of each
    stage and the settings."""
    lines = [
        "# Random init vs BYOL init",
        "",
        "| labels | mode | init | test accuracy (mean ± std) | seeds | epochs |",
        "|---:|---|---|---|---:|---:|",
    ]
    for row in summary.itertuples():
        accuracy = mean_and_std(row.test_acc_mean, row.test_acc_std)
        lines.append(
            f"| {row.n_labels} | {row.mode} | {row.init} | {accuracy} | {row.seeds} | {row.epochs} |"
        )
    if ceiling is not None:
        accuracy = mean_and_std(ceiling.acc_mean, ceiling.acc_std)
        lines.append(
            f"| {ceiling.n_train} (all, folder labels) | finetune | random (ceiling) | {accuracy} | "
            f"{ceiling.seeds} | {ceiling.epochs} |"
        )
    if not paired.empty:
        lines += [
            "",
            "BYOL − random: the mean over seeds of the per-seed difference (both inits of a seed train on "
            "the same labelled images and are scored on the same test images), with its 95 % t-interval "
            "over seeds; a gain or a loss only when the interval excludes 0:",
            "",
            "| labels | mode | BYOL − random test accuracy [95 % interval] | verdict | seeds |",
            "|---:|---|---|---|---:|",
        ]
        lines += [
            f"| {row.n_labels} | {row.mode} | {paired_text(row.diff_mean, row.ci_low, row.ci_high)} | "
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
    lines += [
        "",
        "The monitor: the k-NN whose voters are the labelled split, the diagnostic k-NN (5,000 non-test "
        "voters with their folder labels, k = 20 and 200) and the features' effective rank. Epoch 0 is "
        "the random init.",
        "",
        "| epoch | steps | hours | loss | k-NN, labelled voters | k-NN k=20 | k-NN k=200 | rank |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = byol_metrics.assign(hours=hours).set_index("epoch")
    for epoch in shown_epochs(rows.index.tolist()):
        row = rows.loc[epoch]
        lines.append(
            f"| {epoch} | {int(row.step):,} | {row.hours:.2f} | {number(row.loss)} | {number(row.knn_acc)} | "
            f"{number(row.diag_knn_k20)} | {number(row.diag_knn_k200)} | {number(row.feature_rank, 0)} |"
        )
    return "\n".join(lines) + "\n"


def gap_lines(summary: pd.DataFrame, paired: pd.DataFrame, ceiling: Ceiling) -> list[str]:
    """BYOL − random as a share of the gap between random init and the ceiling, per mode and labels."""
    random = summary[summary["init"] == "random"].set_index(["mode", "n_labels"])["test_acc_mean"]
    lines = [
        "",
        "## The gap to the ceiling",
        "",
        f"The ceiling: random init fine-tuned on all {ceiling.n_train:,} non-test images with their folder "
        f"labels (labels this low-label setting does not have), "
        f"{mean_and_std(ceiling.acc_mean, ceiling.acc_std)} over {ceiling.seeds} seed(s). The share of the "
        "gap between random init and the ceiling that BYOL closes: BYOL − random and its interval divided "
        "by (ceiling − random mean); the ceiling's own spread is not in the interval.",
        "",
        "| labels | mode | random init | gap to the ceiling | share BYOL closes [95 % interval] |",
        "|---:|---|---:|---:|---|",
    ]
    for row in paired.sort_values(["n_labels", "mode"], ascending=[False, True]).itertuples():
        base = random.get((row.mode, row.n_labels), math.nan)
        gap = ceiling.acc_mean - base
        share = paired_text(row.diff_mean / gap, row.ci_low / gap, row.ci_high / gap) if gap > 0 else "—"
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
