"""Does bf16 (or fp16) cost quality? The same short BYOL run in fp32 and in bf16, k-NN curves side by side.

    python benchmarks/bench_precision.py --split-dir results [--work-dir /tmp/precision]
                                         [--epochs 3] [--max-images 6400] [--precisions fp32,bf16]
                                         [-- TRAIN_BYOL_FLAGS...]

Runs `train_byol.py` once per precision (default fp32 and bf16; the first is the baseline) on the split
in --split-dir (from data_split.py; its test split scores the k-NN), with the same seed, images and
flags (anything after `--` goes to every run), each in --work-dir/PRECISION sharing one image cache.
A run that already finished (byol.pt present) is reused, an interrupted one resumes. Prints the loss
and k-NN accuracy of each per epoch, their images/s, and one line for scripts:
RESULT knn_fp32=... knn_bf16=... knn_bf16_minus_fp32=... bf16_vs_fp32_images_per_s=... epochs=...
A precision the device has no units for is emulated and very slow: measure speed where it would be
used (quality, the loss and k-NN curves, is the same arithmetic anywhere).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from byol.device import PRECISIONS

ROOT = Path(__file__).resolve().parents[1]


def train(run_dir: Path, precision: str, args: argparse.Namespace) -> pd.DataFrame:
    """One precision's run in run_dir, on --split-dir's split and one image cache every run reads."""
    if not (run_dir / "byol.pt").is_file():
        command = [
            sys.executable,
            str(ROOT / "train_byol.py"),
            "--out-dir",
            str(run_dir),
            "--split",
            str(args.split_dir),
            "--cache-dir",
            str(args.work_dir / "cache"),
            "--precision",
            precision,
            "--epochs",
            str(args.epochs),
            "--max-images",
            str(args.max_images),
            "--knn-every",
            "1",
            *args.train_flags,
        ]
        if (run_dir / "byol_checkpoint.pt").is_file():
            command.append("--resume")
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True, cwd=ROOT)
    return pd.read_csv(run_dir / "byol_metrics.csv")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split-dir", type=Path, default=ROOT / "results", help="holds splits.csv")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench_precision"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-images", type=int, default=6400)
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="comma-separated; the first is the baseline"
    )
    parser.add_argument("train_flags", nargs="*", help="after --: more train_byol.py flags for both runs")
    args = parser.parse_args()
    if not (args.split_dir / "splits.csv").is_file():
        parser.error(f"--split-dir {args.split_dir}: no splits.csv there; run data_split.py first")

    precisions = args.precisions.split(",")
    named = PRECISIONS[1:]  # not auto: each run names what it compares
    if not set(precisions) <= set(named) or len(set(precisions)) < 2:
        parser.error(f"--precisions {args.precisions}: two or more of {', '.join(named)}")
    curves = {}
    for precision in precisions:
        curves[precision] = train(args.work_dir / precision, precision, args).set_index("epoch")

    table = pd.concat(
        {p: curves[p][["loss", "val_knn_labelled", "images_per_s"]] for p in precisions}, axis=1
    )
    print(f"\n{os.cpu_count()} cores; epoch 0 is the random initialisation (no training yet)")
    print(table.to_string(float_format=lambda value: f"{value:.4f}"))
    print(result_line(curves, precisions, args.epochs))


def result_line(curves: dict[str, pd.DataFrame], precisions: list[str], epochs: int) -> str:
    """The RESULT line: each precision's last k-NN accuracy, and each one's difference and speed ratio
    to the first (the baseline)."""
    last = {p: curves[p]["val_knn_labelled"].dropna().iloc[-1] for p in precisions}
    speed = {p: curves[p]["images_per_s"].mean() for p in precisions}  # epoch 0 has none: NaN, skipped
    base, others = precisions[0], precisions[1:]
    fields = [f"knn_{p}={last[p]:.4f}" for p in precisions]
    fields += [f"knn_{p}_minus_{base}={last[p] - last[base]:+.4f}" for p in others]
    fields += [f"{p}_vs_{base}_images_per_s={speed[p] / speed[base]:.2f}" for p in others]
    return "RESULT " + " ".join(fields) + f" epochs={epochs}"


if __name__ == "__main__":
    main()
