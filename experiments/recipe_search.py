"""One table of BYOL recipe trials: the settings each run used, its k-NN curve and a linear probe.

Each trial is a `train_byol.py --out-dir RUN ...` folder. For each one this scores a frozen-backbone
linear head (random init vs the run's byol.pt, same seeds, via the classifier stage) unless the run
already holds one (then byol.pt is not needed, so the committed trials redraw the table without it),
and writes one row per run to a CSV, so the pretraining default can be chosen from evidence rather
than from a single noisy k-NN number.

    python experiments/recipe_search.py RUN_DIR [RUN_DIR ...] [--out runs/recipe_search.csv]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from byol.cli import run_stage
from byol.comparison import run_classifiers
from byol.errors import UserError
from byol.files import read_csv, read_json, write_csv
from byol.finetune import ClassifierConfig
from byol.outputs import (
    BYOL_CONFIG_FILE,
    BYOL_METRIC_COLUMNS,
    BYOL_METRICS_FILE,
    CLASSIFIER_CONFIG_FILE,
    CLASSIFIER_METRICS_FILE,
    MONITOR_KNNS,
    PAIRED_FILE,
    monitor_split,
    read_monitor_table,
)
from byol.pretrain_config import PretrainConfig
from byol.run_options import WEIGHTS_FILE, RunOptions, add_input_arguments, input_options
from byol.stats import summarize

RECIPE_FIELDS = [name for name in PretrainConfig.__dataclass_fields__ if name not in ("knn_every", "sync_bn")]
# Scored on the validation split: the table chooses a recipe, and the test split never chooses.
PROBE = ClassifierConfig(modes=["frozen"], seeds=3, epochs=30, score_split="validation")


def linear_probe(run_dir: Path, device_name: str, inputs: dict) -> tuple[pd.DataFrame, str]:
    """Frozen-backbone accuracy per init (mean, std over seeds) and the split it was scored on
    (PROBE's validation; test for the trials probed before the validation split existed), trained
    once and then reused. `inputs`: the split and cache the trials share (RunOptions' fields)."""
    metrics_path = run_dir / CLASSIFIER_METRICS_FILE
    if metrics_path.is_file():
        remedy = "delete it to train the probe again"
        metrics = read_csv(metrics_path, ["init", "mode"], remedy)
        if {"random", "byol"} <= set(metrics[metrics["mode"] == "frozen"]["init"]):
            scored_on = read_json(run_dir / CLASSIFIER_CONFIG_FILE, remedy).get("score_split", "test")
            return summarize(metrics[metrics["mode"] == "frozen"]), scored_on
    if not (run_dir / WEIGHTS_FILE).is_file():
        raise UserError(f"{run_dir / WEIGHTS_FILE} not found: the linear probe needs the run's weights")
    # A probe cut short (classifier_metrics.csv without both inits) starts over.
    options = RunOptions(device_name=device_name, overwrite=True, **inputs)
    return run_classifiers(PROBE, run_dir, options), PROBE.score_split


def rank_columns(curve: pd.DataFrame) -> dict:
    """The features' effective rank at random init, at the end, and per epoch (runs that recorded it)."""
    ranks = curve.dropna(subset=["feature_rank"])
    if ranks.empty:
        return {"rank_random_init": math.nan, "rank_last": math.nan, "rank_curve": ""}
    return {
        "rank_random_init": ranks["feature_rank"].iloc[0],
        "rank_last": ranks["feature_rank"].iloc[-1],
        "rank_curve": " ".join(f"{value:.1f}" for value in ranks["feature_rank"]),
    }


def monitor_columns(curve: pd.DataFrame) -> dict:
    """Each monitor k-NN (the labelled voters; the 5,000 diagnostic voters at k=20 and k=200) at random
    init, at the end, at its best, and its curve, named by the split it classified (val_, or test_
    for the trials monitored before the validation split): the diagnostic k=20 ranks recipes (its 95 %
    interval is about +-0.01 on 2,500 images)."""
    split = monitor_split(curve.columns)
    columns = {}
    for name in MONITOR_KNNS:
        scored = curve[f"{split}_{name}"].dropna()
        prefix = f"{split}_{name}"
        columns[f"{prefix}_random_init"] = scored.iloc[0] if len(scored) else math.nan
        columns[f"{prefix}_last"] = scored.iloc[-1] if len(scored) else math.nan
        columns[f"{prefix}_best"] = scored.max() if len(scored) else math.nan
        columns[f"{prefix}_curve"] = " ".join(f"{value:.4f}" for value in scored)
    return columns


def trial_row(run_dir: Path, device_name: str, inputs: dict) -> dict:
    for needed in (BYOL_CONFIG_FILE, BYOL_METRICS_FILE):
        if not (run_dir / needed).is_file():
            raise UserError(
                f"{run_dir / needed} not found: finish that train_byol.py run first, or leave it out"
            )
    remedy = "finish that train_byol.py run again, or leave it out"
    config = read_json(run_dir / BYOL_CONFIG_FILE, remedy)
    curve = read_monitor_table(run_dir / BYOL_METRICS_FILE, BYOL_METRIC_COLUMNS, remedy)
    probe, scored_on = linear_probe(run_dir, device_name, inputs)
    probe = probe.set_index("init")
    defaults = PretrainConfig()
    return {
        "run": run_dir.name,
        **{name: config.get(name, getattr(defaults, name)) for name in RECIPE_FIELDS},
        "pretraining_images": config.get("pretraining_images"),
        "steps": int(curve["step"].max()),
        "loss_first_epoch": curve["loss"].dropna().iloc[0],
        "loss_last_epoch": curve["loss"].dropna().iloc[-1],
        **monitor_columns(curve),
        **rank_columns(curve),
        "hours": curve["seconds"].sum() / 3600,
        # the cost: training seconds per step and the median epoch's speed (equal-time trials differ here)
        "seconds_per_step": curve["seconds"].sum() / max(int(curve["step"].max()), 1),
        "images_per_s_median": curve["images_per_s"].median(),
        "probe_random": probe.loc["random", "test_acc_mean"],
        "probe_byol": probe.loc["byol", "test_acc_mean"],
        "probe_byol_std": probe.loc["byol", "test_acc_std"],
        "probe_seeds": int(probe.loc["byol", "seeds"]),
        "probe_split": scored_on,
        **paired_columns(run_dir),
    }


def paired_columns(run_dir: Path) -> dict:
    """The frozen probe's BYOL − random, paired by seed, with the wider of its two 95 % intervals and
    the verdict (classifier_paired.csv; NaN for the trials probed before it was written)."""
    path = run_dir / PAIRED_FILE
    names = ("probe_diff", "probe_diff_low", "probe_diff_high", "probe_verdict")
    if not path.is_file():
        return dict.fromkeys(names, math.nan)
    paired = read_csv(
        path, ["mode", "diff_mean", "low", "high", "verdict"], "delete it to train the probe again"
    )
    frozen = paired[paired["mode"] == "frozen"]
    if frozen.empty:
        return dict.fromkeys(names, math.nan)
    row = frozen.iloc[-1]
    return dict(zip(names, (row["diff_mean"], row["low"], row["high"], row["verdict"])))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dirs", type=Path, nargs="+", help="train_byol.py output folders")
    parser.add_argument("--out", type=Path, default=Path("runs/recipe_search.csv"))
    parser.add_argument("--device", default="auto", help="for the linear probes: auto, cpu, cuda")
    add_input_arguments(parser)
    args = parser.parse_args()
    inputs = input_options(args)
    table = pd.DataFrame([trial_row(run_dir, args.device, inputs) for run_dir in args.run_dirs])
    write_csv(args.out, table)
    split = monitor_split(table.columns.str.replace("_knn_k20_last", "_knn_k20"))
    knns = [f"{split}_{name}_last" for name in MONITOR_KNNS]
    shown = ["run", "steps", "seconds_per_step", *knns, "rank_last", "probe_byol", "probe_diff"]
    print(table[shown].to_string(index=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_stage(main)
