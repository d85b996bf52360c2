"""BYOL − random as a paired difference over seeds, with two 95 % intervals, and what to call it;
and the per-condition summary of a comparison grid's final epochs (classifier_summary.csv).

Seed k gives both inits the same labelled images, head and batch order, and both are scored on the
same test images, so the per-seed difference cancels what the two runs share (which images happened
to be labelled); a difference of means with the two stds combined does not, and is far wider.
Two intervals: Student's t over seeds (what varies from seed to seed: the labelled set, head, batch
order, views), and a paired bootstrap that resamples the seeds and the test images together (adding
the test set's own sampling error, which the seeds share). A difference is called a gain or a loss
only when the wider of the two excludes 0.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from byol.outputs import INITS, MODES, prediction_column

CONFIDENCE = 0.95
BOOTSTRAP_DRAWS = 4000


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


def paired_bootstrap(
    byol_correct: np.ndarray, random_correct: np.ndarray, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> tuple[float, float]:
    """The 95 % percentile interval of BYOL − random accuracy when the seeds and the test images are
    resampled together: each draw takes as many seeds as there are, with replacement, and as many test
    images, with replacement (the same images for every seed: they share the test set). Inputs are
    (seeds, test images) arrays of 0/1, paired row by row and column by column."""
    differences = byol_correct.astype(np.float64) - random_correct.astype(np.float64)
    n_seeds, n_images = differences.shape
    generator = np.random.default_rng(seed)
    image_counts = generator.multinomial(n_images, np.full(n_images, 1 / n_images), size=draws)
    seed_counts = generator.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=draws)
    per_seed = image_counts @ differences.T / n_images  # (draws, seeds): each seed's mean on the draw
    means = (per_seed * seed_counts).sum(1) / n_seeds
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def wider_interval(t_low: float, t_high: float, boot_low: float, boot_high: float) -> tuple[float, float]:
    """The wider of the t-interval and the bootstrap interval (either may be missing: NaN)."""
    candidates = [(low, high) for low, high in ((t_low, t_high), (boot_low, boot_high)) if math.isfinite(low)]
    if not candidates:
        return math.nan, math.nan
    return max(candidates, key=lambda bounds: bounds[1] - bounds[0])


def verdict(low: float, high: float) -> str:
    """A gain or a loss only when the interval excludes 0; inside it, noise."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "one seed: no interval"
    if low > 0:
        return "gain"
    if high < 0:
        return "loss"
    return "noise (interval includes 0)"


# ci_*: the t-interval over seeds; boot_*: the bootstrap over seeds and test images; low, high: the
# wider of the two, which the verdict reads
PAIRED_COLUMNS = ["n_labels", "mode", "seeds", "diff_mean", "ci_low", "ci_high"]
PAIRED_COLUMNS += ["boot_low", "boot_high", "low", "high", "verdict"]


def bootstrap_bounds(
    predictions: pd.DataFrame | None, mode: str, n_labels: int, seeds: list[int]
) -> tuple[float, float]:
    """paired_bootstrap's interval from classifier_predictions.csv's columns of these runs; NaN when a
    run's column is missing (a study written before the file existed), or when the runs did not all
    score the same images (cross-validation on each seed's own labelled set)."""
    columns = {
        init: [prediction_column(init, mode, n_labels, seed) for seed in seeds] for init in ("byol", "random")
    }
    names = columns["byol"] + columns["random"]
    if predictions is None or not all(c in predictions.columns for c in names):
        return math.nan, math.nan
    scored = predictions[names].notna()
    if not scored.all(axis=1).equals(scored.any(axis=1)):
        return math.nan, math.nan
    predictions = predictions[scored.all(axis=1)]
    labels = predictions["label"].to_numpy()
    correct = {init: (predictions[runs].to_numpy(dtype=float).T == labels) for init, runs in columns.items()}
    return paired_bootstrap(correct["byol"], correct["random"])


def paired_differences(final: pd.DataFrame, predictions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (n_labels, mode): BYOL − random final test accuracy over the seeds both inits ran.

    `final` holds one row per run (init, mode, n_labels, seed, test_acc); `predictions` (optional)
    classifier_predictions.csv's table, for the bootstrap. Columns: PAIRED_COLUMNS (the bootstrap's NaN
    without predictions). Conditions without both inits are left out.
    """
    wide = final.pivot_table(index=["n_labels", "mode", "seed"], columns="init", values="test_acc")
    if not {"random", "byol"} <= set(wide.columns):
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    differences = (wide["byol"] - wide["random"]).dropna()
    rows = []
    for (n_labels, mode), group in differences.groupby(level=["n_labels", "mode"], sort=True):
        mean, low, high = paired_interval(group.tolist())
        seeds = [int(seed) for seed in group.index.get_level_values("seed")]
        boot_low, boot_high = bootstrap_bounds(predictions, mode, n_labels, seeds)
        wider = wider_interval(low, high, boot_low, boot_high)
        rows.append(
            [int(n_labels), mode, len(group), mean, low, high, boot_low, boot_high, *wider, verdict(*wider)]
        )
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def final_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its last epoch."""
    return metrics.loc[metrics.groupby(["init", "mode", "n_labels", "seed"])["epoch"].idxmax()]


def paired_summary(metrics: pd.DataFrame, predictions: pd.DataFrame | None = None) -> pd.DataFrame:
    """BYOL − random per (label count, mode): the mean per-seed paired difference and its 95 % intervals."""
    return paired_differences(final_rows(metrics), predictions)


def predictions_table(rows: list[int], labels: list[int], runs: dict[str, dict[int, int]]) -> pd.DataFrame:
    """classifier_predictions.csv: one row per scored image (cache row, label), a column per run (its
    predicted class; empty where a run did not score that image: cross-validation on per-seed sets)."""
    table = pd.DataFrame({"row": rows, "label": labels})
    for column in sorted(runs):
        table[column] = pd.Series([runs[column].get(row) for row in rows], dtype="Int64")
    return table


def chosen_rate_text(rates: pd.Series) -> str:
    """The rates a condition's seeds trained at: one value, or each with its number of seeds."""
    counts = rates.dropna().value_counts().sort_index()
    if counts.empty:
        return ""
    if len(counts) == 1:
        return f"{counts.index[0]:.0e}"
    return ", ".join(f"{rate:.0e} ({count})" for rate, count in counts.items())


def late_change(run: pd.DataFrame, column: str = "train_loss", fraction: float = 0.2) -> float:
    """How much `column` moved over a run's last `fraction` of epochs (last minus the epoch before it):
    near 0 once training has levelled off."""
    run = run.sort_values("epoch")
    before = max(1, round(run["epoch"].max() * (1 - fraction)))
    start = run.loc[run["epoch"] <= before, column]
    return float(run[column].iloc[-1] - start.iloc[-1]) if len(start) else math.nan


def rate_grid_limits(rates: list[float], widen: int) -> tuple[float, float]:
    """The lowest and highest rate widened_grid can reach from `rates`: a choice at one of them sat on
    the edge of everything tried."""
    ordered = sorted(rates)
    if len(ordered) < 2:
        return ordered[0], ordered[-1]
    low_step, high_step = ordered[1] / ordered[0], ordered[-1] / ordered[-2]
    return ordered[0] / low_step**widen, ordered[-1] * high_step**widen


def rate_limits(classifier_config: dict) -> dict[str, tuple[float, float]]:
    """Per mode, the lowest and highest rate its cross-validation could choose (classifier_config.json's
    grids, widened by its widen_rates: 0 in files from before it existed); a mode with one rate given
    chose nothing and has no limits."""
    widen = classifier_config.get("widen_rates", 0)
    grids = {
        "finetune": classifier_config.get("finetune_lrs", []),
        "frozen": classifier_config.get("probe_lrs", []),
    }
    return {mode: rate_grid_limits(rates, widen) for mode, rates in grids.items() if len(rates) > 1}


def on_edge(rate: float, limits: tuple[float, float] | None) -> bool:
    return limits is not None and any(math.isclose(rate, limit, rel_tol=1e-6) for limit in limits)


def summarize(metrics: pd.DataFrame, limits: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """Per condition: final-epoch test accuracy and loss, mean and std (sample, over seeds); the rate
    the seeds trained at (chosen_lrs: the backbone's when fine-tuned, the probe's when frozen) and how
    many seeds chose a rate on the edge of all a cross-validation could try (`limits`, rate_limits'); the
    final training loss and its change over the last fifth of the epochs (mean over seeds)."""
    metrics = metrics.assign(
        **{c: math.nan for c in ("train_loss", "backbone_lr", "head_lr") if c not in metrics}
    )
    final = final_rows(metrics)
    run_keys = ["init", "mode", "n_labels", "seed"]
    change = metrics.groupby(run_keys).apply(late_change, include_groups=False).rename("train_loss_change")
    final = final.join(change, on=run_keys)
    final["rate"] = final["backbone_lr"].where(final["mode"] == "finetune", final["head_lr"])
    final["on_edge"] = [
        on_edge(rate, (limits or {}).get(mode)) for rate, mode in zip(final["rate"], final["mode"])
    ]
    summary = final.groupby(["init", "mode", "n_labels"], sort=False).agg(
        seeds=("seed", "nunique"),
        epochs=("epoch", "max"),
        test_acc_mean=("test_acc", "mean"),
        test_acc_std=("test_acc", "std"),
        test_loss_mean=("test_loss", "mean"),
        test_loss_std=("test_loss", "std"),
        chosen_lrs=("rate", chosen_rate_text),
        seeds_on_edge=("on_edge", "sum"),
        train_loss_final=("train_loss", "mean"),
        train_loss_change=("train_loss_change", "mean"),
    )
    summary = summary.reset_index()
    order = {name: i for i, name in enumerate(INITS + MODES)}
    return summary.sort_values(
        ["n_labels", "init", "mode"],
        key=lambda c: c.map(order) if c.name != "n_labels" else c,
        ignore_index=True,
    )
