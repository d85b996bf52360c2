"""Scripts in experiments/: studies built on the stages' outputs."""

from __future__ import annotations

import json

import matplotlib.image
import pandas as pd
from conftest import assert_one_error_line, run_script


def monitor_folder(path, split: str, batch: int, k20: list[float]):
    path.mkdir()
    rows = [
        {
            "epoch": epoch,
            "step": epoch * 10,
            "loss": 1.0,
            f"{split}_knn_labelled": 0.5 + value / 10,
            f"{split}_knn_k20": value,
            f"{split}_knn_k200": value,
        }
        for epoch, value in enumerate(k20)
    ]
    pd.DataFrame(rows).to_csv(path / "byol_metrics.csv", index=False)
    (path / "byol_config.json").write_text(json.dumps({"global_batch_size": batch}))
    return path


def test_overlay_runs_draws_each_runs_monitor_against_images_seen(tmp_path):
    first = monitor_folder(tmp_path / "first", "test", 64, [0.55, 0.6, 0.7])  # before the validation split
    second = monitor_folder(tmp_path / "second", "val", 128, [0.56, 0.65])
    out = tmp_path / "overlay.png"
    result = run_script("experiments/overlay_runs.py", first, second, "--out", out)
    assert result.returncode == 0, result.stderr
    assert matplotlib.image.imread(out).shape[1] > 1000
    refused = run_script("experiments/overlay_runs.py", first, second, "--names", "one", "--out", out)
    assert refused.returncode == 2 and "--names" in refused.stderr
    assert_one_error_line(refused.stderr)
