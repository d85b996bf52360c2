"""The compute curve (experiments/compute_curve.py): every snapshot scored against the same random init."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import assert_one_error_line, run_script
from matplotlib.figure import Figure

from byol.plots import short_count
from byol.plots_curve import label_snapshots, short_hours
from byol.pretrain import PretrainConfig, RunOptions, pretrain
from byol.report_curve import curve_markdown, trend_line

PROBE_ARGS = ["--seeds", "2", "--n-labels", "8", "--epochs", "2", "--device", "cpu"]


@pytest.fixture
def snapshot_run(split_dir):
    out = split_dir()
    config = PretrainConfig(epochs=3, batch_size=8, image_size=32, cache_size=36, max_images=16)
    pretrain(config, out, RunOptions(device_name="cpu", snapshot_epochs="1,3"))
    return out


@pytest.mark.slow  # pretrains, then trains probes
def test_each_snapshot_is_probed_against_one_random_init_and_read_back_on_a_rerun(snapshot_run, tmp_path):
    result = run_script("experiments/compute_curve.py", snapshot_run, "--out-dir", tmp_path, *PROBE_ARGS)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "compute_curve.csv")
    assert table["epoch"].tolist() == [0, 1, 3]
    assert table["images_seen"].tolist() == [0, 2 * 8, 6 * 8]  # 2 steps of 8 images per epoch
    monitor = pd.read_csv(snapshot_run / "byol_metrics.csv").set_index("epoch")
    assert table["val_knn_k20"].tolist() == monitor.loc[[0, 1, 3], "val_knn_k20"].tolist()
    assert (table["hours"].diff().dropna() > 0).all()
    assert table["probe_random"].nunique() == 1 and (table["probe_seeds"] == 2).all()
    # Random init and snapshots are probed alike, at the run's own view size.
    for folder in ("random", "epoch0001", "epoch0003"):
        probed = json.loads((snapshot_run / "compute_curve" / folder / "classifier_config.json").read_text())
        assert (probed["image_size"], probed["cache_size"]) == (32, 36), folder
    # The paired difference, recomputed from the probes' own CSVs: snapshot 3 against the random init.
    work = snapshot_run / "compute_curve"
    random = pd.read_csv(work / "random" / "classifier_metrics.csv")
    byol = pd.read_csv(work / "epoch0003" / "classifier_metrics.csv")
    last = lambda frame: frame.loc[frame.groupby("seed")["epoch"].idxmax()].set_index("seed")["test_acc"]  # noqa: E731
    assert set(random["init"]) == {"random"} and set(byol["init"]) == {"byol"}
    expected = (last(byol) - last(random)).mean()
    assert table.set_index("epoch").loc[3, "probe_diff"] == pytest.approx(expected)
    assert table.set_index("epoch").loc[3, "probe_byol"] == pytest.approx(last(byol).mean())
    per_seed = pd.read_csv(tmp_path / "compute_curve_seeds.csv")  # every interval recomputes from these
    assert per_seed["epoch"].tolist() == [1, 1, 3, 3] and per_seed["seed"].tolist() == [0, 1, 0, 1]
    at3 = per_seed[per_seed["epoch"] == 3].set_index("seed")
    assert (at3["probe_byol"] - at3["probe_random"]).mean() == pytest.approx(expected)
    assert not [path for path in work.rglob("*") if path.is_symlink()]  # inputs are passed, not linked
    assert (tmp_path / "compute_curve.png").stat().st_size > 10_000

    trained = {path: path.stat().st_mtime_ns for path in work.glob("*/classifier_metrics.csv")}
    again = run_script("experiments/compute_curve.py", snapshot_run, "--out-dir", tmp_path, *PROBE_ARGS)
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
    summary = (tmp_path / "summary.md").read_text()
    assert "## What more pretraining buys" in summary and "frozen probe at 8 labels" in summary
    row = table.set_index("epoch").loc[3]
    assert f"| 3 | 48 | {row['hours']:.2f} | {row['val_knn_k20']:.3f} |" in summary


def curve_table(epochs: list[int], knn) -> pd.DataFrame:
    """compute_curve.csv's columns for snapshots at `epochs` of 1,000 images each, k-NN knn(images)."""
    images = [1000 * epoch for epoch in epochs]
    return pd.DataFrame(
        {
            "epoch": [0, *epochs],
            "images_seen": [0, *images],
            "hours": [0.0, *(epoch / 10 for epoch in epochs)],
            "val_knn_k20": [0.55, *map(knn, images)],
            "val_knn_k200": 0.6,
            "feature_rank": 100.0,
            "probe_n_labels": 250,
            "probe_byol": 0.6,
            "probe_random": 0.55,
            "probe_diff": [0.0, *(0.05 for _ in epochs)],
            "probe_diff_low": [math.nan, *(0.04 for _ in epochs)],
            "probe_diff_high": [math.nan, *(0.06 for _ in epochs)],
            "probe_verdict": ["random init", *("gain" for _ in epochs)],
        }
    )


def test_the_trend_is_the_last_snapshots_line_in_log_images():
    # Rising 0.02 per doubling at the end, after a flat start the trend must leave out.
    knn = lambda images: 0.5 + 0.02 * max(math.log2(images / 4000), 0)  # noqa: E731
    table = curve_table([1, 2, 4, 8, 16, 32], knn)
    line = trend_line(table, "val_knn_k20", "k-NN", 1.0)
    assert line.startswith("k-NN: +0.020 per doubling of the images seen over epochs 8–32;")
    assert (
        f"predicts {knn(64000):.3f} at 2× the images (64,000) and {knn(320000):.3f} at 10× (320,000)" in line
    )
    flat = trend_line(table, "probe_diff", "probe", 0.45)
    assert flat.startswith("probe: +0.000 per doubling") and "predicts 0.050 at 2×" in flat
    assert trend_line(curve_table([4], knn), "val_knn_k20", "k-NN", 1.0) is None  # one snapshot: no line
    # An accuracy cannot pass 1: past it the line gives where it would get there, not a number above 1.
    steep = lambda images: 0.7 + 0.08 * math.log2(images / 8000)  # noqa: E731  0.94 at 2x, 1.126 at 10x
    capped = trend_line(curve_table([8, 16, 32], steep), "val_knn_k20", "k-NN", 1.0)
    reach = 8000 * 2 ** (0.3 / 0.08)
    assert (
        f"the line predicts 0.940 at 2× the images (64,000); reaches 1.000, the most possible, at 3.4× "
        f"the images ({reach:,.0f}), so the curve must flatten before then and the line says nothing further."
    ) in capped, capped
    assert "1.126" not in capped
    past = trend_line(curve_table([8, 16, 32], steep), "val_knn_k20", "k-NN", 0.9)
    assert "the line predicts" not in past
    assert "the line reaches 0.900, the most possible, at 1.4× the images" in past
    # The power law in the shortfall from the bound gives 10x a number below it: a k-NN whose error
    # shrinks x0.71 per doubling (1 - 0.4 (images / 8,000) ** -0.5) is predicted exactly.
    power = lambda images: 1 - 0.4 * (images / 8000) ** -0.5  # noqa: E731
    law = trend_line(curve_table([8, 16, 32], power), "val_knn_k20", "k-NN", 1.0)
    assert law.endswith(
        "If instead the shortfall from 1.000 keeps shrinking ×0.71 per doubling, as over those epochs "
        "(a power law, the form scaling laws take: it never passes 1.000, but it assumes no floor where "
        f"the shortfall stops shrinking), it predicts {power(64000):.3f} at 2× and "
        f"{power(320000):.3f} at 10× the images."
    ), law
    assert "If instead" not in flat  # a shortfall that is not shrinking predicts nothing
    at_bound = trend_line(curve_table([8, 16, 32], steep), "val_knn_k20", "k-NN", 0.86)
    assert "If instead" not in at_bound  # the last value at the bound already: no shortfall to fit
    markdown = curve_markdown(table)
    assert (
        "| 32 | 32,000 | 3.20 | 0.560 | 0.600 | 100 | 0.600 | 0.550 | +0.050 [+0.040, +0.060] | gain |"
        in markdown
    )
    assert "| 0 | 0 | 0.00 | 0.550 | 0.600 | 100 | 0.600 | 0.550 | — | random init |" in markdown
    assert line.replace("k-NN:", "- k-NN k=20:") in markdown


@pytest.mark.slow
def test_a_run_without_snapshots_says_which_flag_makes_them(split_dir, tmp_path):
    out = split_dir()
    pretrain(
        PretrainConfig(epochs=1, batch_size=8, image_size=32, cache_size=36, max_images=16),
        out,
        RunOptions(device_name="cpu"),
    )
    result = run_script("experiments/compute_curve.py", out, "--out-dir", tmp_path, *PROBE_ARGS)
    assert result.returncode == 2 and "--snapshots log2" in result.stderr
    assert_one_error_line(result.stderr)
    assert not (tmp_path / "compute_curve.csv").exists()


def test_the_snapshot_ticks_read_as_images_and_hours():
    assert [short_count(n) for n in (999, 22_464, 179_712, 1_932_288, 30_000_000)] == [
        "999",
        "22k",
        "180k",
        "1.9M",
        "30M",
    ]
    assert [short_hours(h) for h in (0.184, 1.243, 12.6)] == ["0.18", "1.2", "13"]


def test_snapshots_close_together_do_not_print_their_ticks_over_each_other():
    # The long run's snapshots: epochs 24, 28 and 32 sit within a fifth of a doubling of each other.
    epochs = np.array([1, 2, 4, 8, 16, 24, 28, 32, 64, 86])
    images = 22_464 * epochs
    figure = Figure()
    axis = figure.subplots()
    axis.set_xscale("log")
    axis.plot(images, np.linspace(0.5, 0.8, len(images)))
    label_snapshots(axis, images.astype(float), epochs / 20)
    figure.draw_without_rendering()
    for drawn in (axis, figure.axes[1]):  # images seen below, hours above
        labels = drawn.get_xticklabels()
        texts = [label.get_text() for label in labels]
        assert texts[:5] == (
            [short_count(n) for n in images[:5]]
            if drawn is axis
            else [short_hours(h) for h in epochs[:5] / 20]
        )
        assert texts[-1] and "" in texts  # the last snapshot keeps its label; a crowded one lost its own
        boxes = [label.get_window_extent() for label in labels if label.get_text()]
        assert all(left.x1 < right.x0 for left, right in zip(boxes, boxes[1:]))  # none prints over another
