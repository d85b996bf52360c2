"""Scripts in experiments/: studies built on the stages' outputs."""

from __future__ import annotations

import hashlib
import json
import sys

import matplotlib.image
import pandas as pd
import pytest
from conftest import ROOT, TINY_BYOL, assert_one_error_line, run_script

sys.path.insert(0, str(ROOT / "experiments"))


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


@pytest.mark.slow
def test_carry_study_packs_what_stage_3_reads_and_trains_it_elsewhere(split_dir, tmp_path):
    from carry_study import shuffle_pack, shuffle_unpack

    run_dir = split_dir(per_class=12, n_labelled=8, n_test=8, n_validation=4)
    weights = bytes(range(256)) * 41 + b"odd"  # not a multiple of 4 bytes: the tail travels as it is
    (run_dir / "byol.pt").write_bytes(weights)
    (run_dir / "byol_config.json").write_text("{}")
    assert shuffle_unpack(shuffle_pack(weights), len(weights)) == weights

    carry = tmp_path / "carry"
    result = run_script("experiments/carry_study.py", "pack", run_dir, carry)
    assert result.returncode == 0, result.stderr
    # Only the labelled and test images travel (8 + 8 of 24); the unlabelled and validation ones stay behind.
    assert len([path for path in (carry / "data").rglob("*") if path.is_file()]) == 16

    out = tmp_path / "back"
    flags = ["--inits", "random", "--modes", "frozen", "--seeds", "1", "--n-labels", "8", "--epochs", "1"]
    flags += ["--image-size", "32", "--cache-size", "36", "--probe-lrs", "0.01", "--device", "cpu"]
    refused = run_script("experiments/carry_study.py", "run", carry, tmp_path / "work", out, *flags)
    assert refused.returncode != 0 and "--labelled-sets split" in refused.stderr
    flags += ["--labelled-sets", "split"]
    refused = run_script("experiments/carry_study.py", "run", carry, tmp_path / "work", out, *flags)
    assert refused.returncode != 0 and "--bn-images 0" in refused.stderr
    flags += ["--bn-images", "0"]
    result = run_script("experiments/carry_study.py", "run", carry, tmp_path / "work", out, *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "work" / "byol.pt").read_bytes() == weights
    summary = pd.read_csv(out / "classifier_summary.csv")
    assert summary[["init", "mode", "n_labels"]].values.tolist() == [["random", "frozen", 8]]


@pytest.mark.slow
def test_released_weights_load_into_a_stock_resnet18_score_the_same_and_serve_stage_3(split_dir, tmp_path):
    import torch
    import torchvision

    run_dir = split_dir()
    result = run_script("train_byol.py", "--out-dir", run_dir, "--epochs", "1", *TINY_BYOL)
    assert result.returncode == 0, result.stderr
    released = tmp_path / "release" / "byol_resnet18_fp16.pt"
    result = run_script("experiments/release_weights.py", run_dir, released)
    assert result.returncode == 0, result.stderr
    state = torch.load(released, weights_only=True)
    assert all(value.dtype == torch.float16 for value in state.values() if value.is_floating_point())
    model = torchvision.models.resnet18()
    model.fc = torch.nn.Identity()
    model.load_state_dict(state)  # strict: exactly a stock resnet18's keys, less fc
    full = torch.load(run_dir / "byol.pt", weights_only=True)["backbone"]
    assert all(torch.equal(state[name], full[name].half()) for name in full if full[name].is_floating_point())
    record = json.loads(released.with_suffix(".json").read_text())
    assert record["sha256"] == hashlib.sha256(released.read_bytes()).hexdigest()
    assert record["source"] == "byol.pt"  # the run's file, not a path on the machine that released it
    for name, score in record["knn_full_precision"].items():
        assert abs(record["knn_fp16"][name] - score) <= 0.002, name
    # Stage 3 takes it as --weights, its image size and held-out images from the JSON beside it.
    flags = ["--modes", "frozen", "--seeds", "1", "--n-labels", "8", "--epochs", "1", "--device", "cpu"]
    stage_3 = run_script(
        "train_classifier.py",
        "--out-dir",
        tmp_path / "rescored",
        "--split",
        run_dir,
        "--cache-dir",
        run_dir / "cache",
        "--weights",
        released,
        *flags,
    )
    assert stage_3.returncode == 0, stage_3.stderr
    config = json.loads((tmp_path / "rescored" / "classifier_config.json").read_text())
    assert config["image_size"] == 32
    # A release is written once: replacing it takes --overwrite.
    again = run_script("experiments/release_weights.py", run_dir, released)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert_one_error_line(again.stderr)
    assert record == json.loads(released.with_suffix(".json").read_text())
    # A copy that does not score the same is refused, and nothing is left behind.
    refused = run_script(
        "experiments/release_weights.py", run_dir, tmp_path / "strict.pt", "--tolerance", "-1"
    )
    assert refused.returncode != 0 and "not released" in refused.stderr
    assert_one_error_line(refused.stderr)
    assert not (tmp_path / "strict.pt").exists() and not (tmp_path / "strict.json").exists()


def test_the_committed_release_is_what_its_record_says_and_loads_into_a_stock_resnet18():
    import torch
    import torchvision

    released = ROOT / "results" / "long_run_2" / "byol_resnet18_fp16.pt"
    record = json.loads(released.with_suffix(".json").read_text())
    assert record["sha256"] == hashlib.sha256(released.read_bytes()).hexdigest()
    assert record["bytes"] == released.stat().st_size and record["source_step"] == 30264
    model = torchvision.models.resnet18()
    model.fc = torch.nn.Identity()
    model.load_state_dict(torch.load(released, weights_only=True))  # strict: a stock resnet18, less fc
    for name, score in record["knn_full_precision"].items():
        assert abs(record["knn_fp16"][name] - score) <= 0.002, name
    monitor = pd.read_csv(released.parent / "byol_metrics.csv")
    assert monitor["step"].iloc[-1] == record["source_step"]
    # the monitor's last k-NN ran under the run's bf16 autocast, the release's in fp32: an image or so apart
    assert abs(record["knn_full_precision"]["val_knn_k20"] - monitor["val_knn_k20"].iloc[-1]) <= 0.002
