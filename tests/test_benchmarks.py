"""The benchmark scripts still run and still print the line scripts read (their figures are not checked)."""

from __future__ import annotations

import re
import sys

import pandas as pd
import pytest
import torch
from conftest import ROOT, run_script

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_byol import interleaved  # noqa: E402
from bench_precision import result_line  # noqa: E402

from byol.device import cpu_has_bf16  # noqa: E402


def test_interleaved_times_every_runner_in_turns_after_warming_all_up():
    calls = []
    runners = [lambda name=name: calls.append(name) for name in "ab"]
    seconds = interleaved(runners, rounds=2, steps_per_turn=2, warmup=1, device=torch.device("cpu"))
    assert calls == list("ab" + "aabb" + "aabb")
    assert len(seconds) == 2 and all(s >= 0 for s in seconds)


def test_bench_precision_compares_every_precision_with_the_first():
    def curve(knn_accuracies, images_per_s):
        return pd.DataFrame(
            {"val_knn_labelled": [0.5, *knn_accuracies], "images_per_s": [float("nan"), *images_per_s]}
        )

    curves = {
        "fp32": curve([0.52, 0.54], [40, 42]),
        "bf16": curve([0.51, 0.53], [60, 66]),
        "fp16": curve([0.55, float("nan")], [4, 4]),
    }
    assert result_line(curves, ["fp32", "bf16"], 2) == (
        "RESULT knn_fp32=0.5400 knn_bf16=0.5300 knn_bf16_minus_fp32=-0.0100 "
        "bf16_vs_fp32_images_per_s=1.54 epochs=2"
    )
    assert result_line(curves, ["fp32", "fp16"], 2) == (
        "RESULT knn_fp32=0.5400 knn_fp16=0.5500 knn_fp16_minus_fp32=+0.0100 "  # fp16's last k-NN: epoch 1
        "fp16_vs_fp32_images_per_s=0.10 epochs=2"
    )


@pytest.mark.slow
def test_bench_byol_runs_end_to_end_and_prints_the_result_line(image_folder, tmp_path):
    images = image_folder(per_class=24, size=24)
    result = run_script(
        "benchmarks/bench_byol.py",
        *("--data-dir", images, "--work-dir", tmp_path / "work", "--device", "cpu", "--image-size", "16"),
        *("--batch-size", "4", "--steps", "2", "--warmup", "1", "--workers", "0", "--variants"),
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"RESULT pipeline_vs_model_only=[\d.]+ pipeline_vs_usual=[\d.]+ pipeline_images_per_s=[\d.]+ "
        r"utilisation=[\d.]+ device=cpu precision=(fp32|bf16) image_size=16 batch_size=4",
        last,
    ), last
    assert "variant fp32 contiguous: ratio to fp32 contiguous 1.00" in result.stdout
    # A bf16 peak only where the CPU has bf16 units: emulated, its matmuls alone took 12 s here.
    peak = next(line for line in result.stdout.splitlines() if line.startswith("peak (matmul or conv): "))
    assert ("bf16" in peak) == cpu_has_bf16(), peak
    # The peak is the faster of a matmul and a convolution: no step can pass it.
    assert 0 < float(re.search(r"utilisation=([\d.]+)", last).group(1)) <= 1


@pytest.mark.slow
def test_bench_memory_prints_measured_and_estimated_memory_and_the_result_line():
    result = run_script("benchmarks/bench_memory.py", "--configs", "fp32:2x16,fp32:4x32")
    assert result.returncode == 0, result.stderr
    assert "fp32:4x32" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"RESULT fp32_bytes_per_view_pixel=-?\d+ fp32_runtime_gib=[\d.]+ estimate_vs_measured_max=[\d.]+",
        last,
    ), last
