"""How much memory does a BYOL step need on a CPU? The measurement behind byol/capacity.py.

    python benchmarks/bench_memory.py [--configs fp32:16x150,fp32:48x150,...]

Each configuration PRECISION:BATCHxSIZE runs in a fresh process: the BYOL model and LARS optimiser
(as train_byol.py builds them), two training steps on resident random views, and the peak resident
memory (VmHWM) before and after them. Per precision, the bytes per image and pixel of a view come
from the two configurations with the most pixels (the slope; the first ~0.2 GiB the optimiser
allocates in its first step is not per-image), and the estimate train_byol.py checks before a CPU run
(byol.capacity.byol_step_bytes) is printed beside each measured peak. One line for scripts:
RESULT fp32_bytes_per_view_pixel=... fp32_runtime_gib=... bf16_... estimate_vs_measured_max=...
estimate_vs_measured_max must stay at or under 1: the check refuses only runs that could not fit.
bf16 on a CPU without bf16 units is emulated and slow, but its memory is what it would be natively.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from byol.capacity import BYTES_PER_VIEW_PIXEL, RUNTIME_BYTES, byol_step_bytes  # noqa: E402

DEFAULT_CONFIGS = "fp32:64x64,fp32:16x150,fp32:48x150,fp32:128x150,fp32:256x150,bf16:16x150,bf16:48x150"

ONE_CONFIG = r"""
import json, sys
sys.path[:0] = [sys.argv[4], sys.argv[4] + "/benchmarks"]
import torch
from bench_byol import make_trainer, peak_memory_mib
from byol.device import MEMORY_FORMAT
from byol.distributed import Runtime
from byol.step import train_step
precision, batch, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
device = torch.device("cpu")
trainer = make_trainer(Runtime(device, precision), batch)
view_1 = torch.randn(batch, 3, size, size).contiguous(memory_format=MEMORY_FORMAT)
view_2 = torch.randn_like(view_1)
before = peak_memory_mib(device)
for _ in range(2):
    train_step(trainer, view_1, view_2, 0.01, 0.996).item()
print(json.dumps({"before_mib": before, "peak_mib": peak_memory_mib(device)}))
"""


def parse_configs(text: str) -> list[tuple[str, int, int]]:
    configs = []
    for item in text.split(","):
        precision, shape = item.split(":")
        batch, size = shape.lower().split("x")
        configs.append((precision, int(batch), int(size)))
    return configs


def measure(precision: str, batch: int, size: int) -> tuple[float, float]:
    """Peak resident MiB before and after two steps, in a fresh process."""
    command = [sys.executable, "-c", ONE_CONFIG, precision, str(batch), str(size), str(ROOT)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return measured["before_mib"], measured["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="PRECISION:BATCHxSIZE, comma-separated")
    args = parser.parse_args()

    rows = []
    print(f"{'config':>16} {'before MiB':>11} {'peak MiB':>9} {'estimate MiB':>13} {'estimate/peak':>14}")
    for precision, batch, size in parse_configs(args.configs):
        before, peak = measure(precision, batch, size)
        estimate = byol_step_bytes(batch, size, precision) / 2**20
        rows.append((precision, batch, size, before, peak, estimate))
        config = f"{precision}:{batch}x{size}"
        print(
            f"{config:>16} {before:>11.0f} {peak:>9.0f} {estimate:>13.0f} {estimate / peak:>14.2f}",
            flush=True,
        )

    fitted = []
    for precision in dict.fromkeys(p for p, *_ in rows):
        mine = sorted((b * s * s, peak) for p, b, s, _, peak, _ in rows if p == precision)
        if len(mine) >= 2:
            (pixels_a, peak_a), (pixels_b, peak_b) = mine[-2:]
            slope = (peak_b - peak_a) * 2**20 / (pixels_b - pixels_a)
            runtime_gib = (peak_b * 2**20 - slope * pixels_b) / 2**30
            print(
                f"{precision}: {slope:.0f} bytes per image and view pixel + {runtime_gib:.2f} GiB "
                f"(byol/capacity.py assumes {BYTES_PER_VIEW_PIXEL[precision]} + {RUNTIME_BYTES / 2**30:.2f})"
            )
            fitted.append(
                f"{precision}_bytes_per_view_pixel={slope:.0f} {precision}_runtime_gib={runtime_gib:.2f}"
            )
    worst = max(estimate / peak for *_, peak, estimate in rows)
    print("RESULT " + " ".join(fitted) + f" estimate_vs_measured_max={worst:.2f}")


if __name__ == "__main__":
    main()
