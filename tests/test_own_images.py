"""Your own images: a few labelled folders and an unlabelled pile, answered by cross-validation on the
labels you have (data_split.py --unlabelled-dir, train_classifier.py --evaluation cv)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import TINY_BYOL, assert_one_error_line, run_script

from byol.cv_folds import pool_folds, stratified_folds
from byol.data import UNLABELLED_LABEL, read_split
from byol.demo_images import make_demo_images
from byol.outputs import prediction_column

CLASSIFY = ["--epochs", "1", "--batch-size", "8", "--device", "cpu", "--labelled-sets", "split"]
# Two fine-tuning rates on 2 inner folds, not widened: the nested choice, at a test's cost
CLASSIFY += ["--finetune-lrs", "1e-3,1e-2", "--finetune-folds", "2", "--widen-rates", "0"]


@pytest.fixture(scope="module")
def own_images(tmp_path_factory):
    """The worked example: 12 labelled images per class, a pile of 40 unlabelled ones (another seed:
    other images), split with no validation or test set and pretrained for a few seconds."""
    root = tmp_path_factory.mktemp("own")
    labelled = make_demo_images(root / "labelled", per_class=12, size=40)
    pile = make_demo_images(root / "pile", per_class=20, size=40, seed=1)
    out = root / "run"
    split_args = ["--data-dir", labelled, "--unlabelled-dir", pile, "--out-dir", out, "--workers", 1]
    result = run_script("data_split.py", *split_args, "--n-labelled", 24, "--n-validation", 0, "--n-test", 0)
    assert result.returncode == 0, result.stderr
    result = run_script("train_byol.py", "--out-dir", out, "--epochs", "1", *TINY_BYOL)
    assert result.returncode == 0, result.stderr
    return out


def test_stratified_folds_are_disjoint_cover_every_image_and_spread_each_class():
    labels = torch.tensor([0] * 7 + [1] * 5 + [2] * 3)
    folds = stratified_folds(labels, 3, seed=4)
    assert sorted(sum(folds, [])) == list(range(15))  # disjoint and complete
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for fold in folds:
        counts = torch.bincount(labels[fold], minlength=3).tolist()
        assert counts[0] in (2, 3) and counts[1] in (1, 2) and counts[2] == 1
    assert stratified_folds(labels, 3, seed=4) == folds and stratified_folds(labels, 3, seed=5) != folds


def test_pooled_folds_weigh_held_out_scores_by_their_images():
    def row(acc, loss, lr):
        return {
            "epoch": 1,
            "train_loss": loss,
            "train_acc": 1.0,
            "test_loss": loss,
            "test_acc": acc,
            "seconds": 1.0,
            "head_lr": 0.01,
            "backbone_lr": lr,
        }

    pooled = pool_folds([[row(1.0, 0.1, 1e-4)], [row(0.5, 0.4, 1e-3)], [row(0.0, 0.7, 1e-3)]], [2, 1, 1])[0]
    assert pooled["test_acc"] == pytest.approx((2 * 1.0 + 0.5 + 0.0) / 4)
    assert pooled["test_loss"] == pytest.approx((2 * 0.1 + 0.4 + 0.7) / 4)
    assert pooled["train_loss"] == pytest.approx(0.4) and pooled["seconds"] == 3.0
    assert pooled["backbone_lr"] == pytest.approx(1e-3)


@pytest.mark.slow
@pytest.mark.longest
def test_the_four_stages_answer_by_cross_validation_without_a_test_split(own_images):
    split = read_split(own_images)
    assert not split.indices("test") and not split.indices("validation")
    assert (split.table.loc[split.indices("unlabelled"), "label"] == UNLABELLED_LABEL).all()
    result = run_script(
        "train_classifier.py", "--out-dir", own_images, "--seeds", "2", "--eval-folds", "2", *CLASSIFY
    )
    assert result.returncode == 0, result.stderr
    assert "each scored by 2-fold cross-validation on its labelled images" in result.stderr + result.stdout
    metrics = pd.read_csv(own_images / "classifier_metrics.csv")
    labelled = split.indices("labelled")
    assert (metrics["n_labels"] == 24).all()
    # Every labelled image is predicted once per run, by the fold that held it out; random and BYOL of
    # a seed are paired on the same folds, so on the same images.
    predictions = pd.read_csv(own_images / "classifier_predictions.csv")
    assert predictions["row"].tolist() == labelled
    final = metrics[metrics["epoch"] == 1]
    for run in final.itertuples():
        column = predictions[prediction_column(run.init, run.mode, run.n_labels, run.seed)]
        assert column.notna().all()
        assert (column == predictions["label"]).mean() == pytest.approx(run.test_acc)
    # Each fold chose its own fine-tuning rate (the pooled row holds their median), on its training part.
    assert final.loc[final["mode"] == "finetune", "backbone_lr"].notna().all()
    paired = pd.read_csv(own_images / "classifier_paired.csv")
    assert len(paired) == 2 and paired[["ci_low", "boot_low", "low", "high"]].notna().all().all()
    drawn = run_script("plot_results.py", "--out-dir", own_images)
    assert drawn.returncode == 0, drawn.stderr
    summary = (own_images / "summary.md").read_text()
    assert "2-fold stratified cross-validation on the labelled images, repeated 2 time(s)" in summary
    assert "| 24 | frozen |" in summary and (own_images / "loss_curves.png").is_file()


@pytest.mark.slow
def test_a_class_with_fewer_images_than_the_folds_is_one_line(own_images):
    metrics = own_images / "classifier_metrics.csv"  # there or not, whichever test ran first
    before = metrics.stat().st_mtime_ns if metrics.exists() else None
    result = run_script(
        "train_classifier.py", "--out-dir", own_images, "--eval-folds", "13", "--overwrite", *CLASSIFY
    )
    assert result.returncode == 2
    assert "fewer labelled images than the 13 cross-validation folds in class" in result.stderr
    assert "(12)" in result.stderr.split("folds in class")[1]  # each short class with its count
    assert_one_error_line(result.stderr)
    asked = run_script(
        "train_classifier.py", "--out-dir", own_images, "--evaluation", "test", "--overwrite", *CLASSIFY
    )
    assert asked.returncode == 2 and "no test images to score on" in asked.stderr
    assert_one_error_line(asked.stderr)
    # A split asked for by name is not replaced by cross-validation when the split lacks it.
    validation = run_script(
        "train_classifier.py",
        "--out-dir",
        own_images,
        "--score-split",
        "validation",
        "--overwrite",
        *CLASSIFY,
    )
    assert validation.returncode == 2 and "no validation images to score on" in validation.stderr
    assert "leave out --score-split" in validation.stderr
    assert_one_error_line(validation.stderr)
    assert (metrics.stat().st_mtime_ns if metrics.exists() else None) == before  # refused before writing
