"""The ceiling (experiments/ceiling.py): random init fine-tuned on every non-test image; its report."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from conftest import assert_one_error_line, run_script

from byol import finetune, plots
from byol.outputs import CLASSIFIER_METRIC_COLUMNS

# experiments/ceiling.py's columns; the module itself is run as a user runs it (importing it here first would
# make runpy warn that it runs a second copy).
CEILING_COLUMNS = (
    "seed n_train epoch train_loss train_acc test_loss test_acc seconds head_lr backbone_lr".split()
)

TINY = ["--epochs", "2", "--batch-size", "8", "--image-size", "32", "--device", "cpu"]


def spy_fine_tune(monkeypatch, what) -> list:
    """Every fine-tuning the ceiling runs, as `what(task, job)`, in order (the script runs in-process)."""
    seen = []
    fine_tune = finetune.fine_tune

    def spy(backbone, task, job):
        seen.append(what(task, job))
        return fine_tune(backbone, task, job)

    monkeypatch.setattr(finetune, "fine_tune", spy)
    return seen


@pytest.mark.slow
def test_every_pretraining_image_trains_with_its_folder_label_and_seeds_resume(split_dir, tmp_path):
    run_dir, out = split_dir(per_class=24, n_labelled=8, n_test=16), tmp_path / "out"
    result = run_script("experiments/ceiling.py", run_dir, "--out-dir", out, "--seeds", "2", *TINY)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "plan: 2 seed(s) x 2 epochs of 24 images" in result.stderr
    assert f"wrote {out / 'ceiling_metrics.csv'}" in result.stderr
    metrics = pd.read_csv(out / "ceiling_metrics.csv")
    splits = pd.read_csv(run_dir / "splits.csv")
    # labelled + unlabelled: 24 (the 8 validation images are held out, as the 16 test images are)
    assert (metrics["n_train"] == splits["split"].isin(["labelled", "unlabelled"]).sum()).all()
    assert metrics[["seed", "epoch"]].values.tolist() == [[0, 1], [0, 2], [1, 1], [1, 2]]
    final = metrics[metrics["epoch"] == 2]
    assert final["test_acc"].between(0, 1).all() and (final["backbone_lr"] == 1e-3).all()
    assert final["test_acc"].mul(16).round(6).mod(1).eq(0).all()  # scored on the 16 test images

    again = run_script("experiments/ceiling.py", run_dir, "--out-dir", out, "--seeds", "2", *TINY)
    assert again.returncode == 2 and "--resume" in again.stderr
    assert_one_error_line(again.stderr)
    more = run_script("experiments/ceiling.py", run_dir, "--out-dir", out, "--seeds", "3", "--resume", *TINY)
    assert more.returncode == 0, more.stderr[-2000:]
    assert "plan: 1 seed(s)" in more.stderr
    resumed = pd.read_csv(out / "ceiling_metrics.csv")
    pd.testing.assert_frame_equal(resumed[resumed["seed"] < 2], metrics)  # kept, not trained again
    assert resumed["seed"].tolist()[-2:] == [2, 2]
    other = run_script(
        "experiments/ceiling.py", run_dir, "--out-dir", out, "--resume", *TINY[2:], "--epochs", "3"
    )
    assert other.returncode == 2 and "--epochs 2" in other.stderr and "3" in other.stderr
    assert_one_error_line(other.stderr)
    pd.testing.assert_frame_equal(pd.read_csv(out / "ceiling_metrics.csv"), resumed)
    settings = (out / "ceiling_config.json").read_bytes()
    (out / "ceiling_config.json").unlink()
    lost = run_script("experiments/ceiling.py", run_dir, "--out-dir", out, "--resume", *TINY)
    assert lost.returncode == 2 and "ceiling_config.json is missing" in lost.stderr
    assert_one_error_line(lost.stderr)
    (out / "ceiling_config.json").write_bytes(settings)
    # Finished: resuming trains nothing and needs no images (make study on a clone without them).
    shutil.rmtree(json.loads((run_dir / "split_config.json").read_text())["data_dir"])
    shutil.rmtree(run_dir / "cache")
    done = run_script("experiments/ceiling.py", run_dir, "--out-dir", out, "--seeds", "3", "--resume", *TINY)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nothing to train" in done.stderr and "wrote" not in done.stdout + done.stderr


@pytest.mark.slow
def test_the_ceilings_rate_is_chosen_on_the_validation_split_never_on_test(split_dir, tmp_path, monkeypatch):
    run_dir = split_dir(per_class=24, n_labelled=8, n_test=16, n_validation=8)
    scored = spy_fine_tune(monkeypatch, lambda task, job: (len(task.test), job.config.finetune_lrs[0]))
    args = [run_dir, "--seeds", "1", "--finetune-lrs", "1e-4,1e-3,1e-2", *TINY]
    result = run_script("experiments/ceiling.py", *args, "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "a choice on the validation split (3 rates, more past an edge)" in result.stderr
    chosen = pd.read_csv(tmp_path / "ceiling_metrics.csv")["backbone_lr"].iloc[0]
    trials = [rate for n_scored, rate in scored[:-1]]
    assert all(n_scored == 8 for n_scored, _ in scored[:-1])  # the candidates: scored on validation only
    assert trials[:3] == [1e-4, 1e-3, 1e-2] and chosen in trials
    assert scored[-1] == (16, chosen)  # then the seed itself, scored on test at the chosen rate
    done = 2 * len(scored)  # the bar's epochs: every candidate's, widened ones included, and the seed's
    assert f"{done}/{done}" in result.stderr
    printed = result.stdout + result.stderr
    assert f"ceiling: fine-tuning lr {chosen:g} (" in printed and "chosen by validation accuracy" in printed


@pytest.mark.slow
def test_the_ceilings_length_is_chosen_on_validation_and_its_seeds_train_that_long(
    split_dir, tmp_path, monkeypatch
):
    run_dir = split_dir(per_class=24, n_labelled=8, n_test=16, n_validation=8)
    scored = spy_fine_tune(monkeypatch, lambda task, job: (len(task.test), job.config.epochs))
    args = [run_dir, "--seeds", "2", *TINY, "--finetune-epochs", "1,3", "--widen-rates", "0"]
    result = run_script("experiments/ceiling.py", *args, "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "up to 3 epochs" in result.stderr and "(1 lengths" not in result.stderr
    metrics = pd.read_csv(tmp_path / "ceiling_metrics.csv")
    chosen = metrics.groupby("seed")["epoch"].max()
    assert chosen.nunique() == 1 and chosen.iloc[0] in (1, 3)
    assert scored[:2] == [(8, 1), (8, 3)]  # one rate: only the lengths tried, on validation
    assert scored[2:] == [(16, chosen.iloc[0])] * 2  # the seeds, on test, at the chosen length
    # what a finished seed reaches, for the report (which leaves a seed still training out)
    assert json.loads((tmp_path / "ceiling_config.json").read_text())["run_epochs"] == chosen.iloc[0]
    again = run_script("experiments/ceiling.py", *args, "--seeds", "3", "--out-dir", tmp_path, "--resume")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "chosen by validation" not in again.stdout + again.stderr  # kept from the seeds done
    assert (
        pd.read_csv(tmp_path / "ceiling_metrics.csv").groupby("seed")["epoch"].max().tolist()
        == [chosen.iloc[0]] * 3
    )


@pytest.mark.slow
def test_without_validation_the_ceilings_rate_is_chosen_on_the_pretraining_images(
    split_dir, tmp_path, monkeypatch
):
    run_dir = split_dir(per_class=24, n_labelled=8, n_test=16, n_validation=0)
    seen = []

    def choose(init, byol_state, train, n_classes, job):  # what the choice is given, and a rate to spot
        seen.append((init, byol_state, train.labels.tolist(), job.seed))
        return 0.0123, job.config.epochs

    monkeypatch.setattr(finetune, "choose_finetune", choose)
    args = [run_dir, "--seeds", "2", "--finetune-lrs", "1e-4,1e-3", "--finetune-folds", "2", *TINY]
    result = run_script("experiments/ceiling.py", *args, "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "a choice (2 rates x 2 folds)" in result.stderr
    splits = pd.read_csv(run_dir / "splits.csv")
    pool = splits.loc[splits["split"].isin(["labelled", "unlabelled"]), "label"].tolist()
    assert seen == [("random", None, pool, 0)]  # once, for every seed, on the pretraining images only
    assert (pd.read_csv(tmp_path / "ceiling_metrics.csv")["backbone_lr"] == 0.0123).all()


def write_report_inputs(out, ceiling_accs: list[float], epochs_done: int = 20) -> None:
    """A two-label-count grid's final rows (random 0.60 and BYOL 0.70 at 250 labels, fine-tuned and
    frozen) and a ceiling of len(ceiling_accs) seeds at 20 epochs, each at `epochs_done`."""
    rows = [
        {"init": init, "mode": mode, "seed": seed, "n_labels": n, "epoch": 30}
        | {"train_loss": 0.5, "train_acc": 0.8, "test_loss": 0.6, "seconds": 1.0, "head_lr": 1e-2}
        | {
            "backbone_lr": 1e-3,
            "test_acc": {"random": 0.60, "byol": 0.70}[init] - (250 - n) / 1000 + seed / 100,
        }
        for init in ("random", "byol")
        for mode in ("finetune", "frozen")
        for seed in range(2)
        for n in (50, 250)
    ]
    pd.DataFrame(rows, columns=CLASSIFIER_METRIC_COLUMNS).to_csv(out / "classifier_metrics.csv", index=False)
    ceiling = [
        {"seed": seed, "n_train": 22498, "epoch": epochs_done, "train_loss": 0.1, "train_acc": 0.95}
        | {"test_loss": 0.3, "test_acc": acc, "seconds": 60.0, "head_lr": 1e-2, "backbone_lr": 1e-3}
        for seed, acc in enumerate(ceiling_accs)
    ]
    pd.DataFrame(ceiling, columns=CEILING_COLUMNS).to_csv(out / "ceiling_metrics.csv", index=False)
    (out / "ceiling_config.json").write_text(json.dumps({"epochs": 20}))


def test_the_report_shows_the_ceiling_and_the_share_of_the_gap_byol_closes(tmp_path, monkeypatch):
    write_report_inputs(tmp_path, [0.89, 0.91])
    drawn = []
    save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: (drawn.append(figure), save(figure, path)))
    result = run_script("plot_results.py", "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = (tmp_path / "summary.md").read_text()
    assert (
        "| 22498 (all, folder labels) | finetune | random (ceiling) | 0.900 ± 0.014 | — | — | 2 | 20 |"
        in summary
    )
    # 250 labels: random 0.605 (seeds 0.60, 0.61), BYOL − random +0.100 on both seeds; gap 0.900 − 0.605.
    share = 0.100 / (0.900 - 0.605)
    assert f"| 250 | finetune | 0.605 | +0.295 | {share:+.3f} [{share:+.3f}, {share:+.3f}] |" in summary
    (efficiency,) = [figure for figure in drawn if "Label efficiency" in figure.get_suptitle()]
    top_panels = efficiency.axes[:2]  # fine-tuned and frozen accuracy: the ceiling in both
    for axis in top_panels:
        levels = [line.get_ydata()[0] for line in axis.get_lines() if line.get_linestyle() == "--"]
        assert levels == pytest.approx([0.900])
        assert "folder labels" in " ".join(text.get_text() for text in axis.get_legend().get_texts())


def test_a_ceiling_still_training_is_left_out_of_the_report(tmp_path):
    write_report_inputs(tmp_path, [0.89], epochs_done=10)
    result = run_script("plot_results.py", "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ceiling" not in (tmp_path / "summary.md").read_text()


def test_the_ceiling_parses_the_classifier_flags_as_stage_3_does(monkeypatch):
    import importlib.util
    import sys

    from conftest import ROOT

    from train_classifier import get_args_parser as stage_3_parser

    spec = importlib.util.spec_from_file_location(
        "ceiling_flags_under_test", ROOT / "experiments" / "ceiling.py"
    )
    ceiling = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, ceiling)  # its dataclasses look their module up there
    spec.loader.exec_module(ceiling)
    flags = ["--finetune-lrs", "3e-4,1e-3", "--image-size", "0", "--widen-rates", "1", "--head-lr", "0.02"]
    flags += ["--epochs", "7", "--seeds", "3", "--finetune-folds", "2", "--eval-every", "1"]
    stage_3 = stage_3_parser().parse_args(flags)
    theirs = ceiling.get_args_parser().parse_args(["run", *flags])
    for name in ceiling.CEILING_FLAGS:
        assert getattr(theirs, name) == getattr(stage_3, name), name
    config = ceiling.config_from_args(theirs, ceiling.CEILING, ceiling.CEILING_FLAGS)
    assert (config.inits, config.modes, config.finetune_lrs, config.image_size) == (
        ["random"],
        ["finetune"],
        [3e-4, 1e-3],
        0,
    )
    for bad in (["--finetune-lrs", "0"], ["--image-size", "-1"], ["--seeds", "0"]):
        with pytest.raises(SystemExit):
            ceiling.get_args_parser().parse_args(["run", *bad])


@pytest.mark.slow
def test_a_choice_interrupted_before_its_seeds_resumes_from_the_candidates_it_scored(
    split_dir, tmp_path, monkeypatch
):
    # At full size the choice is hours of candidates before the first seed writes ceiling_metrics.csv.
    run_dir = split_dir(per_class=24, n_labelled=8, n_test=16, n_validation=8)
    trained = spy_fine_tune(monkeypatch, lambda task, job: (len(task.test), job.config.finetune_lrs[0]))
    args = [run_dir, "--seeds", "1", "--finetune-lrs", "1e-4,1e-3", "--widen-rates", "0", *TINY]
    first = run_script("experiments/ceiling.py", *args, "--out-dir", tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    # One bar, in epochs, counts the candidates too: 2 rates x 2 epochs, then the seed's 2.
    assert "6/6" in first.stderr and "ceiling, choosing on validation: rate 0.0001, 2 epochs" in first.stderr
    choices = pd.read_csv(tmp_path / "ceiling_choices.csv")
    assert choices["lr"].tolist() == [1e-4, 1e-3] and (choices["epochs"] == 2).all()
    assert choices["val_acc"].mul(8).round(6).mod(1).eq(0).all()  # scored on the 8 validation images
    chosen = pd.read_csv(tmp_path / "ceiling_metrics.csv")["backbone_lr"].iloc[0]
    # Interrupted during the second candidate: the first is on disk, no seed is.
    (tmp_path / "ceiling_metrics.csv").unlink()
    choices.iloc[:1].to_csv(tmp_path / "ceiling_choices.csv", index=False)
    refused = run_script("experiments/ceiling.py", *args, "--out-dir", tmp_path)
    assert (
        refused.returncode == 2 and "ceiling_choices.csv" in refused.stderr and "--resume" in refused.stderr
    )
    assert_one_error_line(refused.stderr)
    trained.clear()
    resumed = run_script("experiments/ceiling.py", *args, "--out-dir", tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "1 candidate(s) already scored" in resumed.stderr and "4/4" in resumed.stderr
    assert trained == [(8, 1e-3), (16, chosen)]  # only the unscored candidate, then the seed on test
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ceiling_choices.csv"), choices)
    # Another setting cannot reuse them; another grid can (a candidate is the same fine-tuning under
    # any grid that asks for it): a third rate trains only that one, then the seed.
    other = run_script("experiments/ceiling.py", *args, "--out-dir", tmp_path, "--resume", "--head-lr", "0.1")
    assert other.returncode == 2
    assert_one_error_line(other.stderr)
    (tmp_path / "ceiling_metrics.csv").unlink()
    trained.clear()
    wider = [*args[:4], "1e-4,1e-3,1e-2", *args[5:]]
    widened = run_script("experiments/ceiling.py", *wider, "--out-dir", tmp_path, "--resume")
    assert widened.returncode == 0, widened.stderr[-2000:]
    assert [n_scored for n_scored, _ in trained] == [8, 16] and trained[0][1] == 1e-2
    assert pd.read_csv(tmp_path / "ceiling_choices.csv")["lr"].tolist() == [1e-4, 1e-3, 1e-2]
    assert json.loads((tmp_path / "ceiling_config.json").read_text())["finetune_lrs"] == [1e-4, 1e-3, 1e-2]
    (tmp_path / "ceiling_metrics.csv").unlink()
    trained.clear()
    over = run_script("experiments/ceiling.py", *args, "--out-dir", tmp_path, "--overwrite")
    assert over.returncode == 0, over.stderr[-2000:]
    assert [n_scored for n_scored, _ in trained] == [8, 8, 16]
