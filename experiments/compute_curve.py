"""What more pretraining buys: each snapshot of a long run, scored as the study scores byol.pt.

For every `train_byol.py --snapshots` backbone in RUN_DIR/snapshots (and the random init, epoch 0):
the run's own monitor at that epoch (the 5,000-voter diagnostic k-NN, the 250-voter k-NN, the
features' effective rank, from byol_metrics.csv) and a frozen-backbone linear probe at --n-labels
labels over --seeds seeds, as train_classifier.py trains it (probe rate cross-validated on the
labelled images), against the random init on the same seeds: BYOL − random as a paired difference
with its 95 % interval. One classifier folder per snapshot under RUN_DIR/compute_curve/ (resumable:
a snapshot already scored is read back, not trained again); the random init is trained once.

    python experiments/compute_curve.py RUN_DIR [--out-dir results] [--seeds 5] [--n-labels 250]

writes compute_curve.csv and compute_curve.png (accuracy against pretraining images seen, log scale,
the random-init levels as lines, and the hours of pretraining on RUN_DIR's machine on a second axis).
The figure is byol/plots_curve.py's plot_compute_curve and summary.md's section byol/report_curve.py's
curve_markdown, so that plot_results.py redraws both from compute_curve.csv without torch.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd

from byol.cli import StageArgumentParser, positive_int, run_stage
from byol.comparison import run_classifiers
from byol.data import SPLITS_FILE
from byol.errors import UserError
from byol.files import read_csv, read_json, write_csv
from byol.finetune import ClassifierConfig
from byol.outputs import (
    BYOL_CONFIG_FILE,
    BYOL_METRIC_COLUMNS,
    BYOL_METRICS_FILE,
    CLASSIFIER_METRICS_FILE,
    CLASSIFIER_SUMMARY_FILE,
    CURVE_FIGURE,
    CURVE_FILE,
    CURVE_SEED_COLUMNS,
    CURVE_SEEDS_FILE,
    MONITOR_KNNS,
    monitor_split,
    read_monitor_table,
)
from byol.plots_curve import plot_compute_curve
from byol.pretrain_config import SNAPSHOT_DIR, snapshot_path
from byol.report import training_hours
from byol.run_options import CACHE_DIR, RunOptions
from byol.stats import final_rows, paired_interval, verdict

WORK_DIR = "compute_curve"


def snapshot_epochs(run_dir: Path) -> list[int]:
    """The epochs RUN_DIR/snapshots holds, in order (byol_epoch0004.pt -> 4)."""
    folder = run_dir / SNAPSHOT_DIR
    epochs = sorted(int(path.stem.removeprefix("byol_epoch")) for path in folder.glob("byol_epoch*.pt"))
    if not epochs:
        raise UserError(
            f"{folder} holds no snapshots: pretrain with train_byol.py --snapshots log2 (or a list of epochs)"
        )
    return epochs


def probe(
    run_dir: Path, name: str, weights: Path | None, config: ClassifierConfig, device: str
) -> pd.DataFrame:
    """The linear probe's final rows (init, seed, test_acc) of `weights` (None: the random init), on
    RUN_DIR's split and image cache, trained once in RUN_DIR/compute_curve/NAME and then read back."""
    folder = run_dir / WORK_DIR / name
    if not (folder / CLASSIFIER_SUMMARY_FILE).is_file():
        resume = (folder / CLASSIFIER_METRICS_FILE).is_file()
        probe_config = replace(config, inits=["random" if weights is None else "byol"])
        cache = run_dir / CACHE_DIR
        options = RunOptions(
            device_name=device, resume=resume, split=run_dir, cache_dir=cache, weights=weights
        )
        run_classifiers(probe_config, folder, options)
    metrics = read_csv(folder / CLASSIFIER_METRICS_FILE, ["init", "seed", "test_acc"], "delete its folder")
    return final_rows(metrics)[["init", "seed", "test_acc"]]


def curve_rows(run_dir: Path, byol_config: dict, config: ClassifierConfig, device: str) -> pd.DataFrame:
    monitor = read_monitor_table(run_dir / BYOL_METRICS_FILE, BYOL_METRIC_COLUMNS, "finish the run first")
    monitor = monitor.set_index("epoch")
    split = monitor_split(monitor.columns)
    monitor_columns = [*(f"{split}_{name}" for name in MONITOR_KNNS), "feature_rank"]
    epochs = snapshot_epochs(run_dir)  # before any training: a run without snapshots fails at once
    hours = training_hours(monitor)
    random = probe(run_dir, "random", None, config, device).set_index("seed")
    rows = [{"epoch": 0, "step": 0, "byol": random["test_acc"]}]
    for epoch in epochs:
        weights = snapshot_path(run_dir, epoch)
        scored = probe(run_dir, f"epoch{epoch:04d}", weights, config, device).set_index("seed")
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
                **{column: monitor.loc[epoch, column] for column in monitor_columns},
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
    return pd.DataFrame(table), per_seed_rows(rows, random["test_acc"])


def per_seed_rows(rows: list[dict], random: pd.Series) -> pd.DataFrame:
    """compute_curve_seeds.csv: each snapshot's probe accuracy per seed beside the random init's on
    that seed, so that every interval of compute_curve.csv recomputes from committed rows."""
    table = [
        {"epoch": row["epoch"], "seed": seed, "probe_byol": accuracy, "probe_random": random[seed]}
        for row in rows[1:]
        for seed, accuracy in row["byol"].items()
        if seed in random.index
    ]
    return pd.DataFrame(table, columns=CURVE_SEED_COLUMNS)


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
    table, per_seed = curve_rows(args.run_dir, byol_config, config, args.device)
    write_csv(args.out_dir / CURVE_FILE, table)
    write_csv(args.out_dir / CURVE_SEEDS_FILE, per_seed)
    plot_compute_curve(table, args.out_dir / CURVE_FIGURE)
    knn = f"{monitor_split(table.columns)}_knn_k20"
    columns = ["epoch", "images_seen", "hours", knn, "probe_byol", "probe_diff", "probe_verdict"]
    print(table[columns].to_string(index=False))
    print(f"wrote {args.out_dir / CURVE_FILE}, {CURVE_SEEDS_FILE} and {CURVE_FIGURE}")


if __name__ == "__main__":
    run_stage(main)
