"""The stages on a CUDA GPU, as a user with one runs them (skipped where there is none: CI has none;
benchmarks/cuda_check.sh runs these on a lent GPU). Every other test pins --device cpu."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torchvision
from conftest import four_stages, run_script

from byol.demo_images import make_demo_images

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_four_stages_on_cuda_with_a_resumed_pretraining(tmp_path):
    images = make_demo_images(tmp_path / "images", per_class=24, size=40)
    out = tmp_path / "results"
    # The pretraining stopped after one epoch and resumed: the checkpoint saved from the GPU loads back.
    stages = four_stages(images, "cuda", resumed=True)
    for script, *args in stages:
        result = run_script(script, "--out-dir", out, *args)
        assert result.returncode == 0, (script, result.stderr)
        assert "device cuda" in result.stderr or script != "train_byol.py", result.stderr

    assert (out / "byol_views.png").is_file()
    assert pd.read_csv(out / "byol_metrics.csv")["epoch"].tolist() == [0, 1, 2]
    summary = pd.read_csv(out / "classifier_summary.csv")
    assert set(summary["init"]) == {"random", "byol"}
    # Saved from the GPU, the weights load on a CPU-only machine into a stock torchvision ResNet18.
    weights = torch.load(out / "byol.pt", map_location="cpu", weights_only=True)
    stock = torchvision.models.resnet18()
    stock.fc = torch.nn.Identity()
    stock.load_state_dict(weights["backbone"], strict=True)
