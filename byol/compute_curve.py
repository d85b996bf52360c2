"""What more pretraining buys: each snapshot of a long run, scored as the study scores byol.pt.

For every `train_byol.py --snapshots` backbone in RUN_DIR/snapshots (and the random init, epoch 0):
the run's own monitor at that epoch (the 5,000-voter diagnostic k-NN, the 250-voter k-NN, the
features' effective rank, from byol_metrics.csv) and a frozen-backbone linear probe at --n-labels
labels over --seeds seeds, as train_classifier.py trains it (probe rate cross-validated on the
labelled images), against the random init on the same seeds: BYOL − random as a paired difference
with its 95 % interval. One classifier folder per snapshot under RUN_DIR/compute_curve/ (resumable:
a snapshot already scored is read back, not trained again); the random init is trained once.

    python -m byol.compute_curve RUN_DIR [--out-dir results] [--seeds 5] [--n-labels 250]

writes compute_curve.csv and compute_curve.png (accuracy against pretraining images seen, log scale,
the random-init levels as lines, and the hours of pretraining on RUN_DIR's machine on a second axis).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from byol.cli import StageArgumentParser, positive_int, run_stage
from byol.comparison import CLASSIFIER_METRICS_FILE, CLASSIFIER_SUMMARY_FILE, final_rows, run_classifiers
from byol.data import SPLIT_CONFIG_FILE, SPLITS_FILE
from byol.errors import UserError
from byol.files import read_csv, read_json, write_csv
from byol.finetune import ClassifierConfig
from byol.plots import INIT_COLOURS, save_figure
from byol.pretrain import BYOL_CONFIG_FILE, BYOL_METRIC_COLUMNS, BYOL_METRICS_FILE, SNAPSHOT_DIR, WEIGHTS_FILE
from byol.report import paired_text, training_hours
from byol.stats import paired_interval, verdict

CURVE_FILE = "compute_curve.csv"
# What plot_compute_curve and curve_markdown read.
CURVE_COLUMNS = [
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
CURVE_FIGURE = "compute_curve.png"
WORK_DIR = "compute_curve"
MONITOR_COLUMNS = ["knn_acc", "diag_knn_k20", "diag_knn_k200", "feature_rank"]


def snapshot_epochs(run_dir: Path) -> list[int]:
    """The epochs RUN_DIR/snapshots holds, in order (byol_epoch0004.pt -> 4)."""
    folder = run_dir / SNAPSHOT_DIR
    epochs = sorted(int(path.stem.removeprefix("byol_epoch")) for path in folder.glob("byol_epoch*.pt"))
    if not epochs:
        raise UserError(
            f"{folder} holds no snapshots: pretrain with train_byol.py --snapshots log2 (or a list of epochs)"
        )
    return epochs


def probe_folder(run_dir: Path, name: str, weights: Path | None) -> Path:
    """A classifier folder that shares RUN_DIR's split and cache, with `weights` as its byol.pt."""
    folder = run_dir / WORK_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    links = {SPLITS_FILE: run_dir / SPLITS_FILE, SPLIT_CONFIG_FILE: run_dir / SPLIT_CONFIG_FILE}
    links["cache"] = run_dir / "cache"
    links[BYOL_CONFIG_FILE] = run_dir / BYOL_CONFIG_FILE
    if weights is not None:
        links[WEIGHTS_FILE] = weights
    for link_name, target in links.items():
        link = folder / link_name
        if not link.is_symlink() and target.exists():
            link.symlink_to(target.resolve())
    return folder


def probe(folder: Path, inits: list[str], config: ClassifierConfig, device: str) -> pd.DataFrame:
    """The linear probe's final rows (init, seed, test_acc), trained once and then read back."""
    if not (folder / CLASSIFIER_SUMMARY_FILE).is_file():
        resume = (folder / CLASSIFIER_METRICS_FILE).is_file()
        probe_config = ClassifierConfig(**{**vars(config), "inits": inits})
        run_classifiers(probe_config, folder, device_name=device, resume=resume)
    metrics = read_csv(folder / CLASSIFIER_METRICS_FILE, ["init", "seed", "test_acc"], "delete its folder")
    return final_rows(metrics)[["init", "seed", "test_acc"]]


def curve_rows(run_dir: Path, byol_config: dict, config: ClassifierConfig, device: str) -> pd.DataFrame:
    monitor = read_csv(run_dir / BYOL_METRICS_FILE, BYOL_METRIC_COLUMNS, "finish the run first")
    monitor = monitor.set_index("epoch")
    epochs = snapshot_epochs(run_dir)  # before any training: a run without snapshots fails at once
    hours = training_hours(monitor)
    random = probe(probe_folder(run_dir, "random", None), ["random"], config, device).set_index("seed")
    rows = [{"epoch": 0, "step": 0, "byol": random["test_acc"]}]
    for epoch in epochs:
        folder = probe_folder(
            run_dir, f"epoch{epoch:04d}", run_dir / SNAPSHOT_DIR / f"byol_epoch{epoch:04d}.pt"
        )
        scored = probe(folder, ["byol"], config, device).set_index("seed")
        rows.append({"epoch": epoch, "step": int(monitor.loc[epoch, "step"]), "byol": scored["test_acc"]})
    table = []
    for row in rows:
        seeds = row["byol"].index.intersection(random.index)
        differences = (row["byol"][seeds] - random["test_acc"][seeds]).tolist()
        mean, low, high = paired_interval(differences) if row["epoch"] else (0.0, math.nan, math.nan)
        epoch = row["epoch"]
        table.append(
            {
                "epoch": epoch,
                "step": row["step"],
                "images_seen": row["step"] * byol_config["global_batch_size"],
                "hours": float(hours.loc[epoch]) if epoch else 0.0,
                **{column: monitor.loc[epoch, column] for column in MONITOR_COLUMNS},
                "probe_n_labels": config.n_labels[0],
                "probe_seeds": len(seeds),
                "probe_byol": row["byol"][seeds].mean(),
                "probe_byol_std": row["byol"][seeds].std(),
                "probe_random": random["test_acc"][seeds].mean(),
                "probe_diff": mean,
                "probe_diff_low": low,
                "probe_diff_high": high,
                "probe_verdict": verdict(low, high) if epoch else "random init",
            }
        )
    return pd.DataFrame(table)


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
    return text + "."


def curve_markdown(table: pd.DataFrame) -> str:
    """summary.md's section on compute_curve.csv: every snapshot's monitor and probe against random init,
    and what the end of the curve predicts for more compute."""
    n_labels = int(table["probe_n_labels"].iloc[0])
    lines = [
        "",
        "## What more pretraining buys (`compute_curve.csv`)",
        "",
        "Each snapshot of the pretraining: the diagnostic k-NN (5,000 non-test voters with their folder "
        "labels, k = 20 and 200), the features' effective rank, and a frozen-backbone linear probe at "
        f"{n_labels} labels against random init's on the same seeds (BYOL − random paired over seeds, "
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
        lines.append(
            f"| {row.epoch} | {row.images_seen:,} | {row.hours:.2f} | {row.diag_knn_k20:.3f} | "
            f"{row.diag_knn_k200:.3f} | {row.feature_rank:.0f} | {row.probe_byol:.3f} | "
            f"{row.probe_random:.3f} | {difference} | {row.probe_verdict} |"
        )
    best_diff = 1 - float(table["probe_random"].iloc[-1])  # BYOL's probe at 1, random's as measured
    trends = [
        trend_line(table, "diag_knn_k20", "k-NN k=20", bound=1.0),
        trend_line(table, "probe_diff", f"BYOL − random, frozen probe at {n_labels} labels", best_diff),
    ]
    if any(trends):
        lines += [
            "",
            f"The trend: a straight line in log(images seen) through the last {TREND_POINTS} snapshots, "
            "extrapolated (a curve that is flattening falls short of it).",
            "",
        ]
        lines += [f"- {trend}" for trend in trends if trend]
    return "\n".join(lines) + "\n"


def short_count(images: float) -> str:
    """22464 -> '22k', 1797120 -> '1.8M': a tick label."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if images >= size:
            return f"{images / size:.2g}{suffix}" if images < 10 * size else f"{images / size:.0f}{suffix}"
    return f"{images:.0f}"


def short_hours(hours: float) -> str:
    return f"{hours:.2f}" if hours < 1 else f"{hours:.1f}" if hours < 10 else f"{hours:.0f}"


def label_snapshots(axis, images: np.ndarray, hours: np.ndarray) -> None:
    """Ticks at the snapshots only: images seen below, the hours of pretraining they took above."""
    axis.set_xticks(images, [short_count(value) for value in images])
    axis.xaxis.set_minor_locator(NullLocator())
    top = axis.twiny()
    top.set_xscale("log")
    top.set_xlim(axis.get_xlim())
    top.set_xticks(images, [short_hours(value) for value in hours])
    top.xaxis.set_minor_locator(NullLocator())
    top.set_xlabel("hours of pretraining on this machine")


def plot_compute_curve(table: pd.DataFrame, path: Path) -> None:
    """Accuracy against images seen (log x; the random init, seen 0 images, as horizontal lines).
    Drawn from compute_curve.csv alone, so plot_results.py redraws it too."""
    n_labels = int(table["probe_n_labels"].iloc[0])
    figure = Figure(figsize=(7.5, 4.8))
    axis = figure.subplots()
    trained, start = table[table["epoch"] > 0], table[table["epoch"] == 0].iloc[0]
    colour = INIT_COLOURS["byol"]
    axis.plot(
        trained["images_seen"], trained["diag_knn_k20"], "o-", color=colour, label="BYOL: k-NN, 5,000 voters"
    )
    axis.axhline(start["diag_knn_k20"], color=colour, linestyle=":", label="random init: k-NN, 5,000 voters")
    errors = np.vstack(
        [
            trained["probe_diff"] - trained["probe_diff_low"],
            trained["probe_diff_high"] - trained["probe_diff"],
        ]
    )
    probe_colour = "#33a02c"
    axis.errorbar(
        trained["images_seen"],
        trained["probe_byol"],
        yerr=np.nan_to_num(errors),
        fmt="s-",
        color=probe_colour,
        capsize=3,
        label=f"BYOL: frozen probe, {n_labels} labels (paired 95 % interval)",
    )
    axis.axhline(
        start["probe_random"],
        color=INIT_COLOURS["random"],
        linestyle="--",
        label="random init: frozen probe",
    )
    axis.set_xscale("log")
    axis.set_xlabel("pretraining images seen")
    axis.set_ylabel("test accuracy")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="best")
    axis.set_title("What more BYOL pretraining buys")
    label_snapshots(axis, trained["images_seen"].to_numpy(float), trained["hours"].to_numpy(float))
    save_figure(figure, path)


def main() -> None:
    parser = StageArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path, help="a train_byol.py --snapshots output folder")
    parser.add_argument("--out-dir", type=Path, default=Path("results"), help="writes compute_curve.csv/.png")
    parser.add_argument("--seeds", type=positive_int, default=5)
    parser.add_argument("--n-labels", type=positive_int, default=250)
    parser.add_argument("--epochs", type=positive_int, default=30, help="the linear probe's epochs")
    parser.add_argument("--device", default="auto", help="for the linear probes: auto, cpu, cuda")
    args = parser.parse_args()
    for needed in (BYOL_METRICS_FILE, BYOL_CONFIG_FILE, SPLITS_FILE):
        if not (args.run_dir / needed).is_file():
            raise UserError(f"{args.run_dir / needed} not found: give a train_byol.py --out-dir")
    byol_config = read_json(args.run_dir / BYOL_CONFIG_FILE, "finish the run first")
    config = ClassifierConfig(
        modes=["frozen"],
        seeds=args.seeds,
        n_labels=[args.n_labels],
        epochs=args.epochs,
        # The run's own view size for every probe: the random init's folder has no byol.pt to take it
        # from, and train_classifier.py's default without one (150 px) is not what the snapshots saw.
        image_size=byol_config["image_size"],
        cache_size=byol_config["cache_size"],
    )
    table = curve_rows(args.run_dir, byol_config, config, args.device)
    write_csv(args.out_dir / CURVE_FILE, table)
    plot_compute_curve(table, args.out_dir / CURVE_FIGURE)
    columns = ["epoch", "images_seen", "hours", "diag_knn_k20", "probe_byol", "probe_diff", "probe_verdict"]
    print(table[columns].to_string(index=False))
    print(f"wrote {args.out_dir / CURVE_FILE} and {args.out_dir / CURVE_FIGURE}")


if __name__ == "__main__":
    run_stage(main)
