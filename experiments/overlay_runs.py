"""Overlay several pretraining runs' k-NN monitors against the images each had seen.

The run-to-run spread is part of the answer (issue 42): a second run of the same recipe, with its
own split, shows how far one long run's curve is from another's.

    python experiments/overlay_runs.py results/long_run results/long_run_2 \\
        --names "first run" "second run" --out results/long_run_2/knn_overlay.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from byol.cli import run_stage
from byol.errors import UserError
from byol.files import read_json
from byol.outputs import BYOL_CONFIG_FILE, BYOL_METRICS_FILE, read_monitor_table
from byol.plots import RUN_COLOURS, plot_monitor_overlay

OVERLAID = ["step", "val_knn_k20", "val_knn_labelled"]  # test_ in runs monitored before the validation split


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "run_dirs", type=Path, nargs="+", help="folders holding byol_metrics.csv and byol_config.json"
    )
    parser.add_argument("--names", nargs="+", help="one legend name per folder (default: the folder names)")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args()
    names = args.names or [run_dir.name for run_dir in args.run_dirs]
    if len(names) != len(args.run_dirs) or len(names) > len(RUN_COLOURS):
        raise UserError(
            f"--names: give one name per folder ({len(args.run_dirs)}), at most {len(RUN_COLOURS)} runs"
        )
    runs = []
    for name, run_dir in zip(names, args.run_dirs):
        remedy = "point at a train_byol.py output folder"
        metrics = read_monitor_table(run_dir / BYOL_METRICS_FILE, OVERLAID, remedy)
        batch = read_json(run_dir / BYOL_CONFIG_FILE, remedy)["global_batch_size"]
        runs.append((name, metrics, int(batch)))
    plot_monitor_overlay(runs, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_stage(main)
