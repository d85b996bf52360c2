"""The compute curve (byol/compute_curve.py): every snapshot scored against the same random init."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from conftest import assert_one_error_line, run_script

from byol.pretrain import PretrainConfig, RunOptions, pretrain

PROBE_ARGS = ["--seeds", "2", "--n-labels", "8", "--epochs", "2", "--device", "cpu"]

pytestmark = pytest.mark.slow  # every test here pretrains and trains probes


@pytest.fixture
def snapshot_run(split_dir):
    out = split_dir()
    config = PretrainConfig(epochs=3, batch_size=8, image_size=32, cache_size=36, max_images=32)
    pretrain(config, out, RunOptions(device_name="cpu", snapshot_epochs="1,3"))
    return out


def test_each_snapshot_is_probed_against_one_random_init_and_read_back_on_a_rerun(snapshot_run, tmp_path):
    result = run_script("byol.compute_curve", snapshot_run, "--out-dir", tmp_path, *PROBE_ARGS)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "compute_curve.csv")
    assert table["epoch"].tolist() == [0, 1, 3]
    assert table["images_seen"].tolist() == [0, 4 * 8, 12 * 8]  # 4 steps of 8 images per epoch
    monitor = pd.read_csv(snapshot_run / "byol_metrics.csv").set_index("epoch")
    assert table["diag_knn_k20"].tolist() == monitor.loc[[0, 1, 3], "diag_knn_k20"].tolist()
    assert (table["hours"].diff().dropna() > 0).all()
    assert table["probe_random"].nunique() == 1 and (table["probe_seeds"] == 2).all()
    # The paired difference, recomputed from the probes' own CSVs: snapshot 3 against the random init.
    work = snapshot_run / "compute_curve"
    random = pd.read_csv(work / "random" / "classifier_metrics.csv")
    byol = pd.read_csv(work / "epoch0003" / "classifier_metrics.csv")
    last = lambda frame: frame.loc[frame.groupby("seed")["epoch"].idxmax()].set_index("seed")["test_acc"]  # noqa: E731
    assert set(random["init"]) == {"random"} and set(byol["init"]) == {"byol"}
    expected = (last(byol) - last(random)).mean()
    assert table.set_index("epoch").loc[3, "probe_diff"] == pytest.approx(expected)
    assert table.set_index("epoch").loc[3, "probe_byol"] == pytest.approx(last(byol).mean())
    assert (tmp_path / "compute_curve.png").stat().st_size > 10_000

    trained = {path: path.stat().st_mtime_ns for path in work.glob("*/classifier_metrics.csv")}
    again = run_script("byol.compute_curve", snapshot_run, "--out-dir", tmp_path, *PROBE_ARGS)
    assert again.returncode == 0, again.stderr
    assert {path: path.stat().st_mtime_ns for path in trained} == trained  # nothing trained again
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "compute_curve.csv"), table)

    # Stage 4 redraws the figure from the CSV alone (what make study does on a clone without snapshots).
    drawn = (tmp_path / "compute_curve.png").read_bytes()
    (tmp_path / "compute_curve.png").unlink()
    shutil.copy(work / "epoch0003" / "classifier_metrics.csv", tmp_path)
    report = run_script("plot_results.py", "--out-dir", tmp_path)
    assert report.returncode == 0, report.stderr
    assert f"wrote {tmp_path / 'compute_curve.png'}" in report.stdout
    assert (tmp_path / "compute_curve.png").read_bytes() == drawn


def test_a_run_without_snapshots_says_which_flag_makes_them(split_dir, tmp_path):
    out = split_dir()
    pretrain(
        PretrainConfig(epochs=1, batch_size=8, image_size=32, cache_size=36, max_images=16),
        out,
        RunOptions(device_name="cpu"),
    )
    result = run_script("byol.compute_curve", out, "--out-dir", tmp_path, *PROBE_ARGS)
    assert result.returncode == 2 and "--snapshots log2" in result.stderr
    assert_one_error_line(result.stderr)
    assert not (tmp_path / "compute_curve.csv").exists()
