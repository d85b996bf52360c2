"""Time stage 1 on the real images: `python benchmarks/bench_split.py [--data-dir PATH]`.

Runs data_split.py as a user would (a fresh process, all cores) and prints the wall time and the
decode rate. Issue target: 24,998 PetImages files in under 60 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "PetImages")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out_dir:
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "data_split.py"),
                "--data-dir",
                str(args.data_dir),
                "--out-dir",
                out_dir,
            ],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        files = len(pd.read_csv(Path(out_dir) / "splits.csv")) + len(
            pd.read_csv(Path(out_dir) / "rejected.csv")
        )
    print(
        f"files={files} seconds={seconds:.1f} files_per_s={files / seconds:.0f} cores={os.cpu_count()} "
        f"target_s=60 within_target={seconds < 60}"
    )


if __name__ == "__main__":
    main()
