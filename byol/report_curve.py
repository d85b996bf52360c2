"""summary.md's section on a long run's compute curve (compute_curve.csv): every snapshot's monitor and
frozen probe against random init, and what the curve's last snapshots predict for more compute, as a
straight line in log(images seen) and as a power law in the shortfall. Its figure is
byol/plots_curve.py's.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from byol.outputs import monitor_label, monitor_split
from byol.report import paired_text

TREND_POINTS = 3  # the trend's line goes through the last snapshots: the curve's slope where it ends


def log_trend(images: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """The least-squares line of `values` against log2(images): (its value at 1 image, rise per doubling)."""
    slope, intercept = np.polyfit(np.log2(images), values, 1)
    return float(intercept), float(slope)


def trend_line(table: pd.DataFrame, column: str, what: str, bound: float) -> str | None:
    """What the last TREND_POINTS snapshots' straight line in log(images seen) predicts for `column` at
    2x and 10x the last snapshot's images; None with fewer than two snapshots. `column` cannot pass
    `bound` (an accuracy cannot pass 1): a prediction above it is not printed as a number; the line says
    where the straight line would reach it instead, since the curve must flatten before then."""
    trained = table[table["epoch"] > 0].dropna(subset=[column]).tail(TREND_POINTS)
    if len(trained) < 2:
        return None
    intercept, slope = log_trend(trained["images_seen"].to_numpy(float), trained[column].to_numpy(float))
    slope = round(slope, 6) + 0.0  # no "-0.000" for a flat line's rounding error
    last = float(trained["images_seen"].iloc[-1])
    at = {factor: intercept + slope * math.log2(factor * last) for factor in (2, 10)}
    first_epoch, last_epoch = int(trained["epoch"].iloc[0]), int(trained["epoch"].iloc[-1])
    text = f"{what}: {slope:+.3f} per doubling of the images seen over epochs {first_epoch}–{last_epoch}; "
    within = [factor for factor, value in at.items() if value <= bound]
    if within:
        points = [f"{at[factor]:.3f} at {factor}×" for factor in within]
        points[0] += " the images"
        text += "the line predicts " + " and ".join(
            f"{point} ({factor * last:,.0f})" for point, factor in zip(points, within, strict=True)
        )
    if len(within) < len(at):
        reach = 2 ** ((bound - intercept) / slope) / last  # where the line meets the bound (slope > 0 here)
        text += "; " if within else "the line "
        text += (
            f"reaches {bound:.3f}, the most possible, at {reach:.1f}× the images ({reach * last:,.0f}), "
            "so the curve must flatten before then and the line says nothing further"
        )
    return text + "." + power_law_sentence(trained, column, bound)


def power_law_sentence(trained: pd.DataFrame, column: str, bound: float) -> str:
    """What the same snapshots predict at 2x and 10x if the shortfall from `bound` (bound - value, the
    error for an accuracy) keeps shrinking by the factor per doubling it shrank by over them: a power law
    in the images seen, the form scaling laws take, which never passes the bound but assumes no floor
    where the shortfall stops shrinking. "" when it is not shrinking or a value already sits at the bound."""
    shortfall = bound - trained[column].to_numpy(float)
    if (shortfall <= 0).any():
        return ""
    images = trained["images_seen"].to_numpy(float)
    log_shortfall, per_doubling = log_trend(images, np.log2(shortfall))
    if per_doubling >= 0:
        return ""
    at = {
        factor: bound - 2 ** (log_shortfall + per_doubling * math.log2(factor * images[-1]))
        for factor in (2, 10)
    }
    return (
        f" If instead the shortfall from {bound:.3f} keeps shrinking ×{2**per_doubling:.2f} per doubling, "
        f"as over those epochs (a power law, the form scaling laws take: it never passes {bound:.3f}, "
        f"but it assumes no floor where the shortfall stops shrinking), it predicts {at[2]:.3f} at 2× "
        f"and {at[10]:.3f} at 10× the images."
    )


def curve_markdown(table: pd.DataFrame) -> str:
    """summary.md's section on compute_curve.csv: every snapshot's monitor and probe against random init,
    and what the end of the curve predicts for more compute."""
    n_labels, split = int(table["probe_n_labels"].iloc[0]), monitor_split(table.columns)
    lines = [
        "",
        "## What more pretraining buys (`compute_curve.csv`)",
        "",
        f"Each snapshot of the pretraining: the diagnostic k-NN on {monitor_label(split)} (5,000 "
        "pretraining images vote with their folder labels, k = 20 and 200), the features' effective "
        f"rank, and a frozen-backbone linear probe at {n_labels} labels against random init's on the "
        "same seeds (BYOL − random paired over seeds, "
        "95 % interval). Epoch 0 is the random init.",
        "",
        "| epoch | images seen | hours | k-NN k=20 | k-NN k=200 | rank | probe BYOL | probe random | "
        "BYOL − random [95 % interval] | verdict |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in table.itertuples():
        difference = (
            paired_text(row.probe_diff, row.probe_diff_low, row.probe_diff_high) if row.epoch else "—"
        )
        knn_k20, knn_k200 = getattr(row, f"{split}_knn_k20"), getattr(row, f"{split}_knn_k200")
        lines.append(
            f"| {row.epoch} | {row.images_seen:,} | {row.hours:.2f} | {knn_k20:.3f} | "
            f"{knn_k200:.3f} | {row.feature_rank:.0f} | {row.probe_byol:.3f} | "
            f"{row.probe_random:.3f} | {difference} | {row.probe_verdict} |"
        )
    best_diff = 1 - float(table["probe_random"].iloc[-1])  # BYOL's probe at 1, random's as measured
    trends = [
        trend_line(table, f"{split}_knn_k20", "k-NN k=20", bound=1.0),
        trend_line(table, "probe_diff", f"BYOL − random, frozen probe at {n_labels} labels", best_diff),
    ]
    if any(trends):
        lines += [
            "",
            f"The trend: a straight line in log(images seen) through the last {TREND_POINTS} snapshots, "
            "extrapolated (a curve that is flattening falls short of it), and the same snapshots' power law "
            "in the shortfall from the most possible.",
            "",
        ]
        lines += [f"- {trend}" for trend in trends if trend]
    return "\n".join(lines) + "\n"
