"""Explicit inputs (--split, --cache-dir, --weights): a stage reads what earlier stages wrote wherever it
is, writes only its own files into --out-dir, and refuses inputs that do not belong together."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_BYOL, assert_one_error_line, run_script, write_split

from byol.data import SPLIT_CONFIG_FILE, SPLITS_FILE, read_split, split_files
from byol.errors import UserError

# A frozen-probe grid of seconds: one seed, all labels, one rate, no widening, no BatchNorm recalibration.
TINY_PROBE = [
    "--modes",
    "frozen",
    "--seeds",
    "1",
    "--epochs",
    "1",
    "--probe-lrs",
    "1e-3",
    "--widen-rates",
    "0",
]
TINY_PROBE += ["--bn-images", "0", "--image-size", "32", "--cache-size", "36", "--batch-size", "8"]
TINY_PROBE += ["--device", "cpu"]


def test_a_split_is_its_csv_or_the_folder_holding_it(split_dir, tmp_path):
    out = split_dir()
    assert split_files(out) == (out / SPLITS_FILE, out / SPLIT_CONFIG_FILE)
    assert split_files(out / SPLITS_FILE) == (out / SPLITS_FILE, out / SPLIT_CONFIG_FILE)
    assert read_split(out).fingerprint == read_split(out / SPLITS_FILE).fingerprint
    with pytest.raises(UserError, match="no split at .*nowhere.*splits.csv missing.*data_split.py"):
        read_split(tmp_path / "nowhere")
    (out / SPLIT_CONFIG_FILE).unlink()
    with pytest.raises(UserError, match="split_config.json missing"):
        read_split(out / SPLITS_FILE)


@pytest.mark.slow  # pretrains, then trains a probe
def test_stages_read_inputs_elsewhere_and_write_only_their_own_files(split_dir, tmp_path):
    shared, cache = split_dir(), tmp_path / "images_cache"
    pretraining, comparison = tmp_path / "pretraining", tmp_path / "comparison"
    inputs = ["--split", shared, "--cache-dir", cache]
    byol = run_script("train_byol.py", "--out-dir", pretraining, *inputs, "--epochs", "1", *TINY_BYOL)
    assert byol.returncode == 0, byol.stderr
    weights = ["--weights", pretraining / "byol.pt"]
    result = run_script("train_classifier.py", "--out-dir", comparison, *inputs, *weights, *TINY_PROBE)
    assert result.returncode == 0, result.stderr
    assert not {"splits.csv", "split_config.json", "cache"} & {path.name for path in pretraining.iterdir()}
    assert sorted(path.name for path in comparison.iterdir()) == [
        "classifier_config.json",
        "classifier_metrics.csv",
        "classifier_paired.csv",
        "classifier_predictions.csv",
        "classifier_summary.csv",
    ]
    assert not (shared / "cache").exists() and [path.name for path in cache.glob("*.npy")] == [
        "images_36.npy"
    ]
    fingerprint = json.loads((shared / SPLIT_CONFIG_FILE).read_text())["splits_sha256"]
    assert json.loads((pretraining / "byol_config.json").read_text())["splits_sha256"] == fingerprint
    assert json.loads((comparison / "classifier_config.json").read_text())["splits_sha256"] == fingerprint


@pytest.mark.slow  # pretrains
def test_another_split_is_refused_on_resume_and_for_the_weights(split_dir, image_folder, tmp_path):
    trained_on = split_dir()
    other = write_split(image_folder(per_class=30, size=40, name="other"), tmp_path / "other", 8, 16, 8)
    out = tmp_path / "run"
    byol = ["train_byol.py", "--out-dir", out, "--epochs", "2", *TINY_BYOL]
    assert run_script(*byol, "--split", trained_on, "--stop-after-epochs", "1").returncode == 0
    refused = run_script(*byol, "--split", other, "--resume")
    assert refused.returncode == 2
    assert "was trained on another split" in refused.stderr and "--split" in refused.stderr
    assert "Traceback" not in refused.stderr and not (out / "byol.pt").exists()
    assert run_script(*byol, "--split", trained_on, "--resume").returncode == 0  # its own split resumes

    probe = ["train_classifier.py", "--out-dir", tmp_path / "probe", "--split", other, *TINY_PROBE]
    result = run_script(*probe, "--weights", out / "byol.pt")
    assert result.returncode == 2
    assert_one_error_line(result.stderr)
    assert "byol.pt was pretrained on a split that held out other validation/test images" in result.stderr
    assert "--split" in result.stderr and "--pretrained-elsewhere" in result.stderr
    assert not (tmp_path / "probe" / "classifier_metrics.csv").exists()
    # Weights pretrained on other images (the released backbone on a user's own photos): the user says
    # so, the check is skipped, and the run's settings record it.
    elsewhere = run_script(*probe, "--weights", out / "byol.pt", "--pretrained-elsewhere")
    assert elsewhere.returncode == 0, elsewhere.stderr[-2000:]
    settings = json.loads((tmp_path / "probe" / "classifier_config.json").read_text())
    assert settings["pretrained_elsewhere"] is True
