"""The four stages, run as a user runs them, on a small generated image set."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from conftest import ROOT, assert_one_error_line, four_stages, run_script

from byol.demo_images import make_demo_images


def run_make(target: str, variables: dict, *extra: str) -> str:
    """`make TARGET` with this venv's python as BIN (set-up skipped) and these variables; its stdout."""
    bin_dir = Path(sys.executable).parent
    command = ["make", "-C", ROOT, "-o", f"{bin_dir}/python", *extra, target, f"BIN={bin_dir}"]
    command += [f"{name}={value}" for name, value in variables.items()]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def make_pipeline(stages: list[tuple], images: Path, run_dir: Path, *extra: str, classifier_extra=()) -> str:
    """`make pipeline` on `images` into `run_dir` with the stages' own flags, as a user types it: its
    stdout."""
    split, byol, classifier, _ = stages
    variables = {
        "DATA_DIR": images,
        "RUN_DIR": run_dir,
        "SPLIT_ARGS": " ".join(map(str, split[3:])),
        "BYOL_ARGS": " ".join(map(str, byol[1:])),
        "CLASSIFIER_ARGS": " ".join(map(str, [*classifier[1:], *classifier_extra])),
    }
    return run_make("pipeline", variables, *extra)


def stage_commands(printed: str) -> tuple[str, str]:
    """Stage 2's and stage 3's command lines in what `make -n pipeline` printed."""
    stage_2 = printed[printed.index("train_byol.py") :].split("train_classifier.py")[0]
    stage_3 = printed[printed.index("train_classifier.py") :].split("plot_results.py")[0]
    return stage_2, stage_3


@pytest.mark.longest
@pytest.mark.slow
def test_four_stages_end_to_end_then_make_pipeline_keeps_them_and_make_study_redraws_them(tmp_path):
    """The four stages as a user runs them, in a project folder with the repository's .gitignore and
    the default --out-dir: every file and figure, `git status` clean (nothing written where a committed
    study could be), each training stage run again without --resume or --overwrite refused in one line;
    then `make pipeline` run again on that folder (after an interruption, say) keeps the finished
    pretraining and classifier grid (stage 3 once restarted with --overwrite: 35 minutes lost on a
    2-core CPU), --overwrite in a stage's ARGS trains that stage anew; and `make study` redraws every
    figure and table from what a fresh clone holds. One training of the stages serves all three."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / ".gitignore", project)
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", ".gitignore"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "ignore"], check=True)
    images = make_demo_images(tmp_path / "images", per_class=24, size=40)
    stages = four_stages(images, "cpu")
    for script, *args in stages:
        result = run_script(script, *args, cwd=project)
        assert result.returncode == 0, (script, result.stderr)
    out = project / "runs" / "pipeline"

    for name in (
        "splits.csv",
        "rejected.csv",
        "byol_metrics.csv",
        "classifier_metrics.csv",
        "classifier_summary.csv",
    ):
        pd.read_csv(out / name)
    for name in ("split_config.json", "byol_config.json", "classifier_config.json"):
        json.loads((out / name).read_text())
    assert (out / "byol.pt").is_file()
    for name in ("loss_curves.png", "accuracy.png", "byol_pretraining.png", "label_efficiency.png"):
        height, width, _ = matplotlib.image.imread(out / name).shape
        # Two panels side by side; label efficiency has a second row, BYOL − random with its interval.
        assert width > (1.2 if name == "label_efficiency.png" else 1.8) * height, name
    summary = (out / "summary.md").read_text()
    assert "| 12 | finetune | byol |" in summary and "| 4 | frozen | random |" in summary
    assert "BYOL − random" in summary and "image_size: 32" in summary
    pretraining_minutes = pd.read_csv(out / "byol_metrics.csv")["seconds"].sum() / 60
    assert f"| BYOL pretraining (`byol_metrics.csv`) | {pretraining_minutes:.1f} |" in summary
    assert "| classifiers, all runs (`classifier_metrics.csv`) |" in summary

    status = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=all"], capture_output=True, text=True
    )
    assert status.stdout == "", status.stdout
    before = {path: path.read_bytes() for path in out.glob("*.csv")}
    for script, *args in stages[:3]:  # Stage 4 only redraws the folder's own files
        result = run_script(script, *args, cwd=project)
        assert result.returncode == 2 and "already holds an earlier run" in result.stderr, (
            script,
            result.stderr,
        )
        assert_one_error_line(result.stderr)
    assert {path: path.read_bytes() for path in before} == before

    # `make pipeline` again: the same split from the same files, the finished stages kept, figures redrawn.
    kept = ("byol_metrics.csv", "classifier_metrics.csv", "classifier_predictions.csv")
    before = {name: (out / name).read_bytes() for name in kept}
    (out / "summary.md").unlink()
    make_pipeline(stages, images, out)
    assert {name: (out / name).read_bytes() for name in kept} == before
    assert (out / "summary.md").read_text() == summary
    stage_2, stage_3 = stage_commands(
        make_pipeline(stages, images, out, "-n", classifier_extra=["--overwrite"])
    )
    assert "--resume" in stage_2 and "--overwrite" not in stage_2
    assert stage_3.count("--overwrite") == 1 and "--resume" not in stage_3
    # A new folder: pretraining starts fresh, stage 3 with --overwrite (the split was just written there).
    stage_2, stage_3 = stage_commands(make_pipeline(stages, images, tmp_path / "fresh", "-n"))
    assert "--resume" not in stage_2 and "--overwrite" not in stage_2
    assert stage_3.count("--overwrite") == 1 and "--resume" not in stage_3

    # What a fresh clone holds (CSVs, JSON, summary.md; no weights, cache or figures): `make study`
    # redraws every figure and table from it without training anything.
    clone = tmp_path / "clone"
    shutil.copytree(out, clone, ignore=shutil.ignore_patterns("*.pt", "cache", "*.png"))
    (clone / "summary.md").unlink()
    (clone / "long_run").mkdir()  # a long pretraining's progress, copied there as it goes
    for name in ("byol_metrics.csv", "byol_config.json"):
        shutil.copy(out / name, clone / "long_run")
    archived = clone / "archive" / "an earlier study"  # any other study (a space in its name too)
    archived.mkdir(parents=True)
    for name in ("classifier_metrics.csv", "classifier_config.json"):
        shutil.copy(out / name, archived)
    (archived / "summary.md").write_text("stale\n")
    run_make("study", {"OUT_DIR": clone, "RESULTS": clone})
    assert not (clone / "byol.pt").exists() and not (clone / "cache").exists()  # nothing retrained
    assert (clone / "classifier_metrics.csv").read_bytes() == (out / "classifier_metrics.csv").read_bytes()
    assert (clone / "summary.md").read_text() == summary
    for name in ("loss_curves.png", "accuracy.png", "byol_pretraining.png", "label_efficiency.png"):
        assert (clone / name).is_file(), name
    assert (clone / "long_run" / "byol_pretraining.png").is_file()
    assert "No comparison yet" in (clone / "long_run" / "summary.md").read_text()
    assert "| 12 | finetune | byol |" in (archived / "summary.md").read_text()
    assert (archived / "loss_curves.png").is_file()
