"""The recipe-search table (experiments/recipe_search.py): one row per pretraining run, with a probe."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import TINY_BYOL, run_script

pytestmark = pytest.mark.slow  # every test here pretrains and trains probes


def test_one_row_per_run_with_settings_knn_and_probe(split_dir, tmp_path):
    shared = split_dir()  # one split and one image cache for every trial: passed to each, not copied
    inputs = ["--split", shared / "splits.csv", "--cache-dir", shared / "cache"]
    runs = []
    for name, extra in [("paper", []), ("strong", ["--lars-trust", "0.02", "--blur-sigma-max", "0.5"])]:
        run_dir = tmp_path / name
        result = run_script(
            "train_byol.py", "--out-dir", run_dir, *inputs, "--epochs", "1", *TINY_BYOL, *extra
        )
        assert result.returncode == 0, result.stderr
        runs.append(run_dir)
    table_path = tmp_path / "recipe_search.csv"
    result = run_script(
        "experiments/recipe_search.py", *runs, *inputs, "--out", table_path, "--device", "cpu"
    )
    assert result.returncode == 0, result.stderr
    assert not [path for run in runs for path in run.iterdir() if path.name in ("splits.csv", "cache")]
    assert [path.name for path in (shared / "cache").glob("*.npy")] == ["images_36.npy"]  # built once
    table = pd.read_csv(table_path)
    assert table["run"].tolist() == ["paper", "strong"]
    assert table["lars_trust"].tolist() == [1e-3, 0.02] and table["blur_sigma_max"].tolist() == [2.0, 0.5]
    for column in ("val_knn_labelled_random_init", "val_knn_labelled_last", "probe_random", "probe_byol"):
        assert table[column].between(0, 1).all(), column
    assert (table["probe_seeds"] == 3).all() and (table["steps"] == 4).all()
    assert (table["rank_last"] >= 1).all() and (table["rank_curve"].str.split().str.len() == 2).all()
    # Each row against its trial's own files: the probe per init, the monitor's first and last epoch.
    for row, run_dir in zip(table.itertuples(), runs):
        probe = pd.read_csv(run_dir / "classifier_summary.csv").set_index("init")["test_acc_mean"]
        curve = pd.read_csv(run_dir / "byol_metrics.csv")
        assert (row.probe_random, row.probe_byol) == (probe["random"], probe["byol"])
        assert (row.val_knn_labelled_random_init, row.val_knn_labelled_last) == (
            curve["val_knn_labelled"].iloc[0],
            curve["val_knn_labelled"].iloc[-1],
        )
        assert (row.val_knn_k20_random_init, row.val_knn_k200_last) == (
            curve["val_knn_k20"].iloc[0],
            curve["val_knn_k200"].iloc[-1],
        )
        assert row.hours == curve["seconds"].sum() / 3600
        assert row.seconds_per_step == curve["seconds"].sum() / 4  # the cost an equal-time trial pays
        paired = pd.read_csv(run_dir / "classifier_paired.csv").set_index("mode").loc["frozen"]
        assert (row.probe_diff, row.probe_diff_low, row.probe_diff_high, row.probe_verdict) == (
            paired["diff_mean"],
            paired["low"],
            paired["high"],
            paired["verdict"],
        )
        assert row.probe_diff == pytest.approx(row.probe_byol - row.probe_random)
    # The probe is kept in the run folder, so a second call reuses it instead of retraining, and no
    # longer needs the weights (the committed trials have none).
    probe_file = runs[0] / "classifier_metrics.csv"
    modified = probe_file.stat().st_mtime_ns
    (runs[0] / "byol.pt").unlink()
    assert (
        run_script("experiments/recipe_search.py", runs[0], "--out", table_path, "--device", "cpu").returncode
        == 0
    )
    assert probe_file.stat().st_mtime_ns == modified


def test_a_run_without_its_files_is_a_clear_error(split_dir):
    out = split_dir()
    result = run_script("experiments/recipe_search.py", out, "--out", out / "table.csv")
    assert result.returncode == 2 and "byol_config.json not found" in result.stderr
    assert "Traceback" not in result.stderr and not (out / "table.csv").exists()


def test_a_run_without_weights_or_probe_is_a_clear_error(split_dir):
    out = split_dir()
    assert run_script("train_byol.py", "--out-dir", out, "--epochs", "1", *TINY_BYOL).returncode == 0
    (out / "byol.pt").unlink()
    result = run_script("experiments/recipe_search.py", out, "--out", out / "table.csv")
    assert result.returncode == 2 and "byol.pt not found" in result.stderr
    assert "Traceback" not in result.stderr and not (out / "table.csv").exists()
