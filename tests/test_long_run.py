"""`make long-run`: issue 21's long pretraining and everything it feeds, in one resumable command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, run_script

SIZE = "--image-size 32 --cache-size 36 --device cpu"
ONE_RATE = "--finetune-lrs 1e-3 --probe-lrs 1e-2"  # no rate chosen by cross-validation: seconds, not a minute


CLASSIFIER_ARGS = f"--seeds 2 --n-labels 4,8 --epochs 2 --batch-size 8 {ONE_RATE} {SIZE}"


def make_long_run(run_dir: Path, results: Path) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    variables = {
        "BIN": bin_dir,
        "RESULTS": results,
        "OUT_DIR": results,
        "LONG_DIR": run_dir,
        "LONG_BYOL_ARGS": f"--epochs 2 --batch-size 8 --max-images 16 --snapshots 2 {SIZE}",
        "LONG_CURVE_ARGS": "--seeds 2 --n-labels 8 --epochs 2 --device cpu",
        "LONG_CLASSIFIER_ARGS": CLASSIFIER_ARGS,
        "LONG_CEILING_ARGS": "--seeds 1 --epochs 1 --batch-size 8 --finetune-lrs 1e-3 --device cpu",
    }
    command = ["make", "-C", ROOT, "-o", f"{bin_dir}/python", "long-run"]
    command += [f"{name}={value}" for name, value in variables.items()]
    return subprocess.run(command, capture_output=True, text=True)


@pytest.mark.longest
@pytest.mark.slow  # pretrains, scores a snapshot and trains the comparison, each in a new process
def test_long_run_pretrains_scores_snapshots_and_compares_then_a_rerun_trains_nothing(split_dir, tmp_path):
    run_dir = split_dir()  # the split is already there: make long-run keeps it
    results = tmp_path / "repo_results"
    results.mkdir()
    for name in ("ceiling_metrics.csv", "ceiling_config.json"):  # another study's ceiling: not this run's
        shutil.copy(ROOT / "results" / "archive" / "study_12_epochs" / name, results)
    splits = (run_dir / "splits.csv").read_bytes()
    # The study's random half, trained before the pretraining (no byol.pt) and kept in the repository:
    # the study resumes it and trains only the BYOL runs.
    random_half = results / "long_run" / "random_half"
    random_half.mkdir(parents=True)
    args = ["--out-dir", run_dir, "--inits", "random", *CLASSIFIER_ARGS.split()]
    trained = run_script("train_classifier.py", *args)
    assert trained.returncode == 0, trained.stderr
    for name in ("classifier_metrics.csv", "classifier_config.json"):
        shutil.move(run_dir / name, random_half / name)
    for name in ("classifier_summary.csv", "classifier_paired.csv"):
        (run_dir / name).unlink()
    random_rows = pd.read_csv(random_half / "classifier_metrics.csv")

    first = make_long_run(run_dir, results)
    assert first.returncode == 0, first.stdout + first.stderr
    long_out = results / "long_run"
    assert (run_dir / "splits.csv").read_bytes() == splits
    assert [path.name for path in (run_dir / "snapshots").iterdir()] == ["byol_epoch0002.pt"]
    # The small files land beside the report; weights, snapshots and cache stay in LONG_DIR.
    assert sorted(path.name for path in long_out.iterdir()) == sorted(
        [
            "byol_config.json",
            "byol_metrics.csv",
            "compute_curve.csv",
            "compute_curve_seeds.csv",
            "ceiling_config.json",
            "ceiling_metrics.csv",
            "classifier_config.json",
            "classifier_metrics.csv",
            "classifier_summary.csv",
            "classifier_paired.csv",
            "classifier_predictions.csv",
            "summary.md",
            "byol_pretraining.png",
            "compute_curve.png",
            "loss_curves.png",
            "accuracy.png",
            "label_efficiency.png",
            "random_half",
        ]
    )
    for name in ("byol_metrics.csv", "ceiling_metrics.csv"):
        assert (long_out / name).read_bytes() == (run_dir / name).read_bytes(), name
    assert pd.read_csv(long_out / "ceiling_metrics.csv")["seed"].tolist() == [0]  # the run's own ceiling
    assert pd.read_csv(long_out / "compute_curve.csv")["epoch"].tolist() == [0, 2]
    metrics = pd.read_csv(long_out / "classifier_metrics.csv")
    assert set(metrics["init"]) == {"random", "byol"} and set(metrics["n_labels"]) == {4, 8}
    pd.testing.assert_frame_equal(metrics[metrics["init"] == "random"].reset_index(drop=True), random_rows)
    summary = (long_out / "summary.md").read_text()
    assert "## What more pretraining buys" in summary and "ceiling" in summary

    # Run again: every finished step is skipped, nothing is trained again, the report is the same.
    trained = [run_dir / "byol.pt", run_dir / "classifier_metrics.csv", run_dir / "ceiling_metrics.csv"]
    trained += sorted((run_dir / "compute_curve").glob("*/classifier_metrics.csv"))
    stamps = {path: path.stat().st_mtime_ns for path in trained}
    again = make_long_run(run_dir, results)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {path: path.stat().st_mtime_ns for path in trained} == stamps
    assert (long_out / "summary.md").read_text() == summary
