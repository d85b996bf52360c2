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
The figure is byol/plots.py's plot_compute_curve and summary.md's section byol/report.py's
curve_markdown, so that plot_results.py redraws both from compute_curve.csv without torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from byol.cli import StageArgumentParser, positive_int, run_stage
from byol.comparison import run_classifiers
from byol.data import SPLIT_CONFIG_FILE, SPLITS_FILE
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
    MONITOR_KNNS,
    monitor_split,
    read_monitor_table,
)
from byol.plots_curve import plot_compute_curve
from byol.pretrain import WEIGHTS_FILE
from byol.pretrain_config import SNAPSHOT_DIR
from byol.report import training_hours
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
    monitor = read_monitor_table(run_dir / BYOL_METRICS_FILE, BYOL_METRIC_COLUMNS, "finish the run first")
    monitor = monitor.set_index("epoch")
    split = monitor_split(monitor.columns)
    monitor_columns = [*(f"{split}_{name}" for name in MONITOR_KNNS), "feature_rank"]
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
    return pd.DataFrame(table)


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
    knn = f"{monitor_split(table.columns)}_knn_k20"
    columns = ["epoch", "images_seen", "hours", knn, "probe_byol", "probe_diff", "probe_verdict"]
    print(table[columns].to_string(index=False))
    print(f"wrote {args.out_dir / CURVE_FILE} and {args.out_dir / CURVE_FIGURE}")


if __name__ == "__main__":
    run_stage(main)
