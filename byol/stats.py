"""BYOL − random as a paired difference over seeds, with a 95 % t-interval, and what to call it;
and the per-condition summary of a comparison grid's final epochs (classifier_summary.csv).

Seed k gives both inits the same labelled images, head and batch order, and both are scored on the
same test images, so the per-seed difference cancels what the two runs share (which images happened
to be labelled); a difference of means with the two stds combined does not, and is far wider. The
interval is Student's t over seeds (the seeds are the independent repeats); a difference is called
a gain or a loss only when its interval excludes 0.
"""

from __future__ import annotations

import math

import pandas as pd

from byol.outputs import INITS, MODES

CONFIDENCE = 0.95


def t_cdf(x: float, df: int) -> float:
    """Student's t cumulative distribution at x >= 0, by Simpson's rule on its density (no SciPy)."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(t: float) -> float:
        return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))

    intervals = 2000  # even; at x <= 13 (df 1's 97.5 % point is 12.71) the error is below 1e-9
    width = x / intervals
    total = density(0.0) + density(x)
    total += sum((4 if i % 2 else 2) * density(i * width) for i in range(1, intervals))
    return 0.5 + total * width / 3


def t_critical(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided critical value: P(|T| <= t) = confidence for T ~ t(df), by bisection."""
    target, low, high = 0.5 + confidence / 2, 0.0, 100.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if t_cdf(middle, df) < target else (low, middle)
    return (low + high) / 2


def paired_interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean of the per-seed differences and its 95 % t-interval (NaN bounds for a single seed)."""
    n = len(differences)
    mean = sum(differences) / n
    if n < 2:
        return mean, math.nan, math.nan
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    half = t_critical(n - 1) * std / math.sqrt(n)
    return mean, mean - half, mean + half


def verdict(low: float, high: float) -> str:
    """A gain or a loss only when the interval excludes 0; inside it, noise."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "one seed: no interval"
    if low > 0:
        return "gain"
    if high < 0:
        return "loss"
    return "noise (interval includes 0)"


def paired_differences(final: pd.DataFrame) -> pd.DataFrame:
    """Per (n_labels, mode): BYOL − random final test accuracy over the seeds both inits ran.

    `final` holds one row per run (init, mode, n_labels, seed, test_acc). Columns: n_labels, mode,
    seeds, diff_mean, ci_low, ci_high, verdict. Conditions without both inits are left out.
    """
    columns = ["n_labels", "mode", "seeds", "diff_mean", "ci_low", "ci_high", "verdict"]
    wide = final.pivot_table(index=["n_labels", "mode", "seed"], columns="init", values="test_acc")
    if not {"random", "byol"} <= set(wide.columns):
        return pd.DataFrame(columns=columns)
    differences = (wide["byol"] - wide["random"]).dropna()
    rows = []
    for (n_labels, mode), group in differences.groupby(level=["n_labels", "mode"], sort=True):
        mean, low, high = paired_interval(group.tolist())
        rows.append([int(n_labels), mode, len(group), mean, low, high, verdict(low, high)])
    return pd.DataFrame(rows, columns=columns)


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
