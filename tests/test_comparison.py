"""Stage 3 and 4 (byol/finetune.py, comparison.py, plots.py, report.py): fairness, frozen mode, the report."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from functools import partial
from pathlib import Path

import matplotlib.axes
import matplotlib.image
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_BYOL, assert_one_error_line, run_script, write_split
from torch import nn

from byol import comparison, finetune, grid_plan
from byol.cache import load_cache
from byol.comparison import check_labelled, load_grid, run_classifiers
from byol.cross_validation import widened_grid
from byol.data import Split, read_split, splits_fingerprint
from byol.demo_images import make_demo_images
from byol.distributed import Runtime
from byol.errors import UserError
from byol.evaluate import eval_view, extract_features, recalibrate_batchnorm
from byol.finetune import (
    ClassifierConfig,
    Examples,
    Job,
    Task,
    choose_finetune,
    cross_validate,
    fine_tune,
    load_byol_backbone,
    make_backbone,
    probe_head,
    standardize,
    train_probe,
)
from byol.grid_plan import GridSpeed
from byol.labelled_sets import balanced_subset, labelled_set_id
from byol.model import resnet18_backbone
from byol.outputs import CLASSIFIER_METRIC_COLUMNS, prediction_column
from byol.plots import plot_accuracy, plot_label_efficiency, plot_loss_curves
from byol.report import format_summary, pretraining_markdown, summary_markdown
from byol.run_options import CACHE_DIR, WEIGHTS_FILE, RunOptions
from byol.stats import final_rows, paired_summary, rate_grid_limits, rate_limits, summarize

CPU = Runtime(torch.device("cpu"))

FAST = ["--epochs", "2", "--batch-size", "8", "--image-size", "32", "--cache-size", "36", "--device", "cpu"]
ONE_FINETUNE_LR = ["--finetune-lrs", "1e-3"]  # no cross-validated choice: for tests about something else


@pytest.fixture(scope="module")
def pretrained_once(tmp_path_factory):
    """A split with a (very briefly) pretrained byol.pt beside it, made once for this module."""
    root = tmp_path_factory.mktemp("pretrained")
    out = write_split(make_demo_images(root / "images", per_class=24, size=40), root / "results", 12, 12)
    result = run_script("train_byol.py", "--out-dir", out, "--epochs", "1", *TINY_BYOL)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def pretrained(pretrained_once, tmp_path):
    """A private copy of the pretrained results for one test (the images are shared, read-only)."""
    return Path(shutil.copytree(pretrained_once, tmp_path / "results"))


@pytest.mark.slow
def test_four_conditions_same_images_and_columns(pretrained):
    result = run_script("train_classifier.py", "--out-dir", pretrained, "--seeds", "2", *FAST)
    assert result.returncode == 0, result.stderr
    metrics = pd.read_csv(pretrained / "classifier_metrics.csv")
    assert list(metrics.columns) == CLASSIFIER_METRIC_COLUMNS
    conditions = metrics.groupby(["init", "mode"]).size()
    assert set(conditions.index) == {(i, m) for i in ("random", "byol") for m in ("finetune", "frozen")}
    assert (conditions == 2 * 2).all()  # 2 seeds x 2 epochs each
    assert metrics["test_acc"].between(0, 1).all() and (metrics["n_labels"] == 12).all()
    # Per-seed labelled sets: at the split's own count (12) too, each seed trains on its own images,
    # and every init and mode of a seed on the same ones.
    sets = metrics.groupby("seed")["labelled_set"]
    assert (sets.nunique() == 1).all() and metrics["labelled_set"].nunique() == 2
    assert (metrics["seconds"] > 0).all()  # wall time per epoch, for the report's stage times
    finetune = metrics[metrics["mode"] == "finetune"]
    # One cross-validated rate per init, from the grid, shared by both seeds; frozen runs have none.
    assert (finetune.groupby("init")["backbone_lr"].nunique() == 1).all()
    assert set(finetune["backbone_lr"]) <= reachable_rates(ClassifierConfig().finetune_lrs)
    assert metrics.loc[metrics["mode"] == "frozen", "backbone_lr"].isna().all()
    paired = pd.read_csv(pretrained / "classifier_paired.csv")
    assert set(paired["mode"]) == {"finetune", "frozen"} and (paired["seeds"] == 2).all()
    # Both intervals: the t over seeds and the bootstrap over seeds and test images; the verdict's the wider.
    assert paired[["ci_low", "boot_low", "boot_high"]].notna().all().all()
    widths = pd.concat(
        [paired["ci_high"] - paired["ci_low"], paired["boot_high"] - paired["boot_low"]], axis=1
    )
    assert (paired["high"] - paired["low"]).tolist() == pytest.approx(widths.max(axis=1).tolist())
    assert_predictions_match_the_metrics(pretrained, metrics)
    summary = pd.read_csv(pretrained / "classifier_summary.csv")
    assert {"init", "mode", "n_labels", "seeds", "test_acc_mean", "test_acc_std"} <= set(summary.columns)
    assert len(summary) == 4 and (summary["seeds"] == 2).all()
    assert "test_acc" in result.stdout and "byol" in result.stdout
    assert "BYOL - random finetune  n=12" in result.stdout and "(2 paired seeds)" in result.stdout


def reachable_rates(grid: list[float], widen: int = ClassifierConfig().widen_rates) -> set[float]:
    """The rates cross-validation may choose from `grid`: its own, and up to `widen` grid steps past
    either edge (finetune.widened_grid)."""
    rates = sorted(grid)
    low, high = [rates[0]], [rates[-1]]
    for step in range(widen):
        low.append(low[-1] * low[-1] / (rates[1] if step == 0 else low[-2]))
        high.append(high[-1] * high[-1] / (rates[-2] if step == 0 else high[-2]))
    return set(rates + low + high)


def assert_predictions_match_the_metrics(out_dir: Path, metrics: pd.DataFrame) -> None:
    """classifier_predictions.csv: one row per test image, one column per run, whose accuracy is the
    run's final test_acc."""
    predictions = pd.read_csv(out_dir / "classifier_predictions.csv")
    split = read_split(out_dir)
    assert predictions["row"].tolist() == split.indices("test")
    assert predictions["label"].tolist() == split.table.loc[split.indices("test"), "label"].tolist()
    final = final_rows(metrics)
    assert len(predictions.columns) == 2 + len(final)
    for run in final.itertuples():
        column = predictions[prediction_column(run.init, run.mode, run.n_labels, run.seed)]
        assert (column == predictions["label"]).mean() == pytest.approx(run.test_acc)


def test_same_labelled_images_for_every_init_and_mode(pretrained):
    split = read_split(pretrained)
    subsets = {seed: balanced_subset(split, 6, seed) for seed in (0, 1)}
    assert subsets[0] == balanced_subset(split, 6, 0)  # the same draw whatever init or mode asks
    assert subsets[0] != subsets[1]
    labelled = set(split.indices("labelled"))
    test = set(split.indices("test"))
    for rows in subsets.values():
        assert set(rows) <= labelled and not set(rows) & test
        assert split.table.loc[rows, "label"].value_counts().tolist() == [3, 3]
    assert balanced_subset(split, 0, 0) == sorted(labelled)


@pytest.mark.slow
def test_every_init_and_mode_of_a_seed_trains_on_the_same_images_head_and_batches(pretrained, monkeypatch):
    """Recorded in a real grid: which labelled images each run gets, the labels of its training
    batches in order (the batch order), the head it starts from, and the backbones the grid builds."""
    runs, backbones, drawn = [], [], {}
    real_fit, real_cross_entropy = finetune._fit, F.cross_entropy
    real_make_backbone, real_subset = comparison.make_backbone, comparison.balanced_subset

    def recording_subset(split, n_labels, seed, labelled_sets):  # each run's set, drawn once
        drawn.setdefault(seed, []).append(real_subset(split, n_labels, seed, labelled_sets))
        return drawn[seed][-1]

    def recording_fit(learner, task, job):
        head = learner.head.weight.detach().clone()
        runs.append({"seed": job.seed, "rows": drawn[job.seed][-1], "head": head, "batches": []})
        assert len(task.train) == len(drawn[job.seed][-1])
        return real_fit(learner, task, job)

    def recording_cross_entropy(logits, target, *args, **kwargs):
        if kwargs.get("reduction", "mean") == "mean":  # training batches (the test scores sum)
            runs[-1]["batches"].append(target.tolist())
        return real_cross_entropy(logits, target, *args, **kwargs)

    def recording_make_backbone(init, seed, byol_state):
        backbone = real_make_backbone(init, seed, byol_state)
        backbones.append((init, seed, {k: v.clone() for k, v in backbone.state_dict().items()}))
        return backbone

    monkeypatch.setattr(finetune, "_fit", recording_fit)
    monkeypatch.setattr(F, "cross_entropy", recording_cross_entropy)
    monkeypatch.setattr(comparison, "make_backbone", recording_make_backbone)
    monkeypatch.setattr(comparison, "balanced_subset", recording_subset)
    monkeypatch.setattr(grid_plan, "measure_grid_speed", lambda *args: GridSpeed(1.0, 1.0))
    # One rate each, so that no cross-validation run is mixed in: the grid's runs only.
    config = ClassifierConfig(
        seeds=2, n_labels=[6], epochs=2, batch_size=4, probe_lrs=[1e-2], finetune_lrs=[1e-3]
    )
    run_classifiers(config, pretrained, RunOptions(device_name="cpu", precision_name="fp32", overwrite=True))
    order = [
        (seed, init, mode)
        for seed in (0, 1)
        for init in ("random", "byol")
        for mode in ("finetune", "frozen")
    ]
    assert [run["seed"] for run in runs] == [seed for seed, _, _ in order]
    by_condition = dict(zip(order, runs))
    for seed in (0, 1):
        first = by_condition[(seed, "random", "finetune")]
        assert len(first["batches"]) == 2 * 2  # 2 epochs of 6 images in batches of 4 (the last of 2)
        for init, mode in [("random", "frozen"), ("byol", "finetune"), ("byol", "frozen")]:
            other = by_condition[(seed, init, mode)]
            assert other["rows"] == first["rows"] and other["batches"] == first["batches"], (seed, init, mode)
            assert torch.equal(other["head"], first["head"]), (seed, init, mode)
    assert all(rows == drawn[seed][0] for seed in (0, 1) for rows in drawn[seed])  # one set per seed
    assert by_condition[(0, "random", "finetune")]["rows"] != by_condition[(1, "random", "finetune")]["rows"]
    random_backbones = [(seed, state) for init, seed, state in backbones if init == "random"]
    assert [seed for seed, _ in random_backbones] == [0, 0, 1, 1]  # one per mode and seed
    for (_, a), (_, b) in (random_backbones[:2], random_backbones[2:]):
        assert all(torch.equal(a[k], b[k]) for k in a)  # the same random backbone in both modes


def test_per_seed_labelled_sets_differ_at_every_count_and_seed_0_keeps_the_split(pretrained):
    split = read_split(pretrained)
    labelled = split.indices("labelled")
    held_out = set(split.indices("validation", "test"))
    for n_labels in (4, 6, 12):  # 12: every labelled image of the split
        sets = [balanced_subset(split, n_labels, seed, "per-seed") for seed in range(4)]
        ids = {labelled_set_id(split, rows) for rows in sets}
        assert len(ids) == 4, n_labels  # four seeds, four different sets
        assert set(sets[0]) <= set(labelled)  # seed 0: the split's own labelled images
        for rows in sets:
            assert len(rows) == n_labels and not set(rows) & held_out
            assert split.table.loc[rows, "label"].value_counts().tolist() == [n_labels // 2] * 2
    assert balanced_subset(split, 12, 0, "per-seed") == labelled
    # A user's own labels (--labelled-sets split): at their full count, every seed has the same set.
    assert {labelled_set_id(split, balanced_subset(split, 12, seed, "split")) for seed in range(3)} == {
        labelled_set_id(split, labelled)
    }


def test_n_labels_subsets_are_balanced_with_a_remainder(pretrained):
    split = read_split(pretrained)
    counts = split.table.loc[balanced_subset(split, 7, 3), "label"].value_counts().sort_values().tolist()
    assert counts == [3, 4]


def test_frozen_mode_keeps_the_backbone_fixed(pretrained, monkeypatch):
    made = []  # every backbone the grid builds: its init, its state when built, the module itself

    def recording(init, seed, byol_state):
        backbone = real_make_backbone(init, seed, byol_state)
        made.append((init, {name: value.clone() for name, value in backbone.state_dict().items()}, backbone))
        return backbone

    real_make_backbone = comparison.make_backbone
    monkeypatch.setattr(comparison, "make_backbone", recording)
    config = ClassifierConfig(modes=["frozen"], seeds=2, epochs=2, batch_size=4, probe_lrs=[1e-2])
    run_classifiers(config, pretrained, RunOptions(device_name="cpu", overwrite=True))
    assert sorted(init for init, _, _ in made) == ["byol", "byol", "random", "random"]
    for init, before, backbone in made:  # weights, BatchNorm statistics and counters alike
        after = backbone.state_dict()
        assert all(torch.equal(before[name], after[name]) for name in before), init


def test_frozen_probe_standardises_by_the_training_features_only():
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([1e-3, 1.0, 50.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    train = torch.rand(40, 6, generator=generator, dtype=torch.float64) * scales + 3
    train[:, 5] = 0.25  # a dead dimension: constant over the training images
    test = torch.rand(30, 6, generator=generator, dtype=torch.float64) + 3
    train_scaled, test_scaled = standardize(train, test)
    assert torch.allclose(train_scaled[:, :5].mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(
        train_scaled[:, :5].std(0, unbiased=False), torch.ones(5, dtype=torch.float64), atol=1e-6
    )
    # The dead dimension is dropped (zero) on both sides, however large its test values.
    assert not train_scaled[:, 5].any() and not test_scaled[:, 5].any()
    # The test features get the training statistics, not their own.
    assert torch.allclose(
        test_scaled[:, 1], (test[:, 1] - train[:, 1].mean()) / train[:, 1].std(unbiased=False)
    )
    # So the probe sees the same inputs whatever the backbone's feature scale.
    big_train, big_test = standardize(train * 1000, test * 1000)
    assert torch.allclose(big_train, train_scaled, atol=1e-3) and torch.allclose(
        big_test, test_scaled, atol=1e-3
    )


# fp16 goes through the loss scaler, whose first steps overflow and are skipped while it lowers the scale
# from 2**16 (4 of them here): 4 epochs of 2 steps leave it some to take.
@pytest.mark.slow
@pytest.mark.parametrize("precision, epochs", [("fp32", 1), ("fp16", 4)])
def test_finetune_mode_changes_the_backbone(pretrained, precision, epochs):
    backbone = resnet18_backbone()
    before = backbone.conv1.weight.detach().clone()
    images = torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8)  # 16 px: a CPU emulates fp16 slowly
    labels = torch.tensor([0, 1] * 4)
    examples = Examples(images, labels)
    config = ClassifierConfig(epochs=epochs, batch_size=4, image_size=16, finetune_lrs=[1e-3])
    rows = fine_tune(
        backbone, Task(examples, examples, 2), Job(0, config, Runtime(torch.device("cpu"), precision))
    )
    assert not torch.equal(before, backbone.conv1.weight.detach())
    assert all(torch.isfinite(torch.tensor([row["train_loss"], row["test_loss"]])).all() for row in rows)


def test_probe_lr_is_chosen_on_the_training_images_only():
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1] * 20)
    features = torch.randn(40, 512, generator=generator)
    features[:, :64] += 2 * labels[:, None]  # a clear direction between the classes
    test_features = torch.randn(30, 512, generator=generator)
    config = ClassifierConfig(epochs=5, batch_size=8, probe_lrs=[1e-9, 1e-1])

    def head_lrs(test_labels, config=config, mode="frozen", inputs=features, test_inputs=test_features):
        train = train_probe if mode == "frozen" else partial(fine_tune, resnet18_backbone())
        task = Task(Examples(inputs, labels[: len(inputs)]), Examples(test_inputs, test_labels), 2)
        rows = train(task, Job(0, config, CPU))
        return {row["head_lr"] for row in rows}

    # The held-out folds of the training images tell a probe that learns (1e-1) from one that cannot.
    assert head_lrs(torch.zeros(30, dtype=torch.long)) == {1e-1}
    # The test split plays no part in the choice: labels that punish 1e-1 there change nothing.
    assert head_lrs(torch.ones(30, dtype=torch.long)) == {1e-1}
    assert head_lrs(torch.zeros(30, dtype=torch.long), ClassifierConfig(epochs=2, probe_lrs=[0.05])) == {0.05}
    images = torch.randint(0, 256, (4, 3, 36, 36), dtype=torch.uint8)
    finetune = ClassifierConfig(epochs=1, batch_size=4, image_size=32, head_lr=0.02, finetune_lrs=[1e-3])
    assert head_lrs(labels[:4], finetune, "finetune", images, images) == {0.02}  # fine-tuning keeps --head-lr


@pytest.mark.slow
def test_label_sweep_and_resume_skip_finished_runs(pretrained):
    args = ["--out-dir", pretrained, "--seeds", "1", "--modes", "frozen", "--n-labels", "4,12", *FAST]
    assert run_script("train_classifier.py", *args).returncode == 0
    metrics = pd.read_csv(pretrained / "classifier_metrics.csv")
    assert sorted(metrics["n_labels"].unique()) == [4, 12]
    again = run_script("train_classifier.py", *args, "--resume")
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(pd.read_csv(pretrained / "classifier_metrics.csv"), metrics)
    # Neither a forgotten --resume nor a resume with other settings may discard the finished runs.
    refused = run_script("train_classifier.py", *args)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    assert_one_error_line(refused.stderr)
    changed = run_script("train_classifier.py", *args, "--resume", "--epochs", "3")
    assert changed.returncode == 2 and "--epochs 2" in changed.stderr
    assert_one_error_line(changed.stderr)
    config_path = pretrained / "classifier_config.json"
    config = json.loads(config_path.read_text())
    config["byol_config"]["epochs"] += 1  # as if byol.pt had been retrained since
    config_path.write_text(json.dumps(config))
    retrained = run_script("train_classifier.py", *args, "--resume")
    assert retrained.returncode == 2 and "another pretraining" in retrained.stderr
    pd.testing.assert_frame_equal(pd.read_csv(pretrained / "classifier_metrics.csv"), metrics)
    assert run_script("train_classifier.py", *args, "--overwrite", "--epochs", "1").returncode == 0
    assert pd.read_csv(pretrained / "classifier_metrics.csv")["epoch"].max() == 1


@pytest.mark.slow
def test_the_random_half_trained_first_is_kept_when_the_byol_half_resumes_it(pretrained):
    # The random-init runs need no byol.pt: a long run's study trains them while it still pretrains.
    args = ["--out-dir", pretrained, "--seeds", "2", "--modes", "frozen", "--n-labels", "12", *FAST]
    assert run_script("train_classifier.py", *args, "--inits", "random").returncode == 0
    random_half = pd.read_csv(pretrained / "classifier_metrics.csv")
    assert set(random_half["init"]) == {"random"}
    both = run_script("train_classifier.py", *args, "--inits", "random,byol", "--resume")
    assert both.returncode == 0, both.stderr
    # The bar starts at the runs already done, so its rate and ETA are those of the runs left.
    assert "| 2/4 [" in both.stderr and "| 0/4 [" not in both.stderr
    metrics = pd.read_csv(pretrained / "classifier_metrics.csv")
    assert set(metrics["init"]) == {"random", "byol"} and set(metrics["seed"]) == {0, 1}
    kept = metrics[metrics["init"] == "random"].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, random_half)
    assert_predictions_match_the_metrics(pretrained, metrics)  # the kept runs' predictions kept too
    paired = pd.read_csv(pretrained / "classifier_paired.csv")
    assert paired[["n_labels", "mode", "seeds"]].values.tolist() == [[12, "frozen", 2]]  # paired by seed
    # Rows trained on another split are never resumed into this one.
    permute_test_labels(pretrained)
    refused = run_script("train_classifier.py", *args, "--inits", "random,byol", "--resume")
    assert refused.returncode == 2 and "another split" in refused.stderr
    assert_one_error_line(refused.stderr)
    pd.testing.assert_frame_equal(pd.read_csv(pretrained / "classifier_metrics.csv"), metrics)


@pytest.mark.slow
def test_resume_with_other_probe_lrs_retrains_only_the_frozen_runs(pretrained):
    args = ["--out-dir", pretrained, "--seeds", "1", "--n-labels", "12", *FAST, *ONE_FINETUNE_LR]
    assert run_script("train_classifier.py", *args).returncode == 0
    metrics_path = pretrained / "classifier_metrics.csv"
    first = pd.read_csv(metrics_path)
    finetune = first[first["mode"] == "finetune"].reset_index(drop=True)
    assert set(finetune["head_lr"]) == {ClassifierConfig().head_lr} and set(finetune["backbone_lr"]) == {1e-3}
    assert set(first.loc[first["mode"] == "frozen", "head_lr"]) <= reachable_rates(
        ClassifierConfig().probe_lrs
    )
    changed = run_script("train_classifier.py", *args, "--resume", "--probe-lrs", "0.5")
    assert changed.returncode == 0, changed.stderr
    last = pd.read_csv(metrics_path)
    pd.testing.assert_frame_equal(last[last["mode"] == "finetune"].reset_index(drop=True), finetune)
    assert set(last.loc[last["mode"] == "frozen", "head_lr"]) == {0.5}
    assert len(last) == len(first)


def test_a_last_batch_of_one_image_does_not_break_batchnorm(pretrained):
    # 9 labels in batches of 4 leave one image; at 32 px the backbone's last BatchNorm sees 1 value.
    args = ["--inits", "random", "--modes", "finetune", "--seeds", "1", "--n-labels", "9"]
    result = run_script(
        "train_classifier.py", "--out-dir", pretrained, *FAST, *ONE_FINETUNE_LR, *args, "--batch-size", "4"
    )
    assert result.returncode == 0, result.stderr[-2000:]


def truncate(path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


@pytest.mark.parametrize(
    "prepare, args, message",
    [
        (lambda out: (out / "byol.pt").unlink(), [], "byol.pt not found"),
        (lambda out: torch.save({"backbone": nn.Linear(2, 2).state_dict()}, out / "byol.pt"), [], "resnet18"),
        (lambda out: truncate(out / "byol.pt", 1000), [], "byol.pt is not a readable checkpoint"),
        (lambda out: None, ["--inits", "random,imagenet"], "--inits"),
        (lambda out: None, ["--n-labels", "500"], "--n-labels 500"),
        (lambda out: None, ["--n-labels", "4,500"], "--n-labels 500"),  # before the 4-label runs train
        (lambda out: None, ["--n-labels", "-3"], "--n-labels"),
        (lambda out: None, ["--head-lr", "0"], "--head-lr: must be above 0"),
        (lambda out: None, ["--probe-lrs", "1e-3,0"], "--probe-lrs: must be above 0"),
        (lambda out: None, ["--probe-lrs", "1e-3,fast"], "not a comma list of numbers"),
        (lambda out: None, ["--finetune-lrs", "1e-3,inf"], "--finetune-lrs: must be a finite number"),
        (lambda out: None, ["--finetune-folds", "1"], "--finetune-folds 1: cross-validation needs 2"),
        (
            lambda out: None,
            ["--evaluation", "cv", "--score-split", "validation"],
            "never on a split; drop one",
        ),
        (lambda out: None, ["--n-labels", "2"], "too few to choose the fine-tuning rate by 3-fold"),
        (lambda out: None, ["--batch-size", "1"], "--batch-size: must be 2 or more"),
        (lambda out: None, ["--image-size", "4"], "--image-size 4: must be 8 px or more"),
    ],
)
def test_bad_input_is_one_line_exit_2(pretrained, prepare, args, message):
    prepare(pretrained)
    result = run_script("train_classifier.py", "--out-dir", pretrained, *FAST, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert_one_error_line(result.stderr)
    assert not (pretrained / "classifier_metrics.csv").exists()  # refused before any run trained


def test_labelled_images_too_few_for_the_grid_are_refused_before_training(tmp_path):
    images = make_demo_images(tmp_path / "images", per_class=12, size=40)
    unlabelled = write_split(images, tmp_path / "unlabelled", 0, 8)  # was a ZeroDivisionError
    result = run_script("train_classifier.py", "--out-dir", unlabelled, "--inits", "random", *FAST)
    assert result.returncode == 2
    assert "no labelled image of circle, square; re-run data_split.py with --n-labelled 2" in result.stderr
    assert_one_error_line(result.stderr)
    # Under torchrun each fine-tuning process needs two images (BatchNorm); a linear probe needs none.
    split = read_split(write_split(images, tmp_path / "two", 2, 8))
    with pytest.raises(UserError, match="--n-labels 2: fine-tuning in 2 process"):
        check_labelled(split, ClassifierConfig(), world_size=2)
    check_labelled(split, ClassifierConfig(finetune_lrs=[1e-3]), world_size=1)
    check_labelled(split, ClassifierConfig(modes=["frozen"]), world_size=2)
    # Choosing the fine-tuning rate trains on a fold's remaining images: 1 of 2 is too few.
    with pytest.raises(UserError, match="--n-labels 2: too few to choose the fine-tuning rate"):
        check_labelled(split, ClassifierConfig(), world_size=1)


def final_metrics(accuracies: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    """One final epoch per seed for each (init, mode): the rows summarize() reads."""
    rows = [
        {
            "init": init,
            "mode": mode,
            "seed": seed,
            "n_labels": 250,
            "epoch": 30,
            "test_acc": acc,
            "test_loss": 0.7,
            "train_loss": 0.3,
            "backbone_lr": 1e-4 if mode == "finetune" else math.nan,
            "head_lr": 1e-2 if mode == "finetune" else [1e-3, 1e-2][seed % 2],
        }
        for (init, mode), accs in accuracies.items()
        for seed, acc in enumerate(accs)
    ]
    return pd.DataFrame(rows)


def test_one_seed_is_shown_without_a_spread_rather_than_plus_minus_zero():
    metrics = final_metrics(
        {
            ("random", "finetune"): [0.60],
            ("byol", "finetune"): [0.70],
            ("random", "frozen"): [0.50, 0.54],
            ("byol", "frozen"): [0.58, 0.62],
        }
    )
    # The grids cross-validation could reach: fine-tuning 1e-4 sits on its lower edge, probes inside.
    limits = rate_limits(
        {"finetune_lrs": [1e-4, 1e-3], "probe_lrs": [1e-4, 1e-3, 1e-2, 1e-1], "widen_rates": 0}
    )
    summary = summarize(metrics, limits)
    table = summary_markdown(summary, paired_summary(metrics))
    row = "| 250 | finetune | random | 0.600 (one seed: no spread) | 1e-04 — 1 on the grid's edge "
    row += "| 0.300 | 1 | 30 |"  # one epoch each here: no change to show
    assert row in table
    assert "| 250 | frozen | byol | 0.600 ± 0.028 | 1e-03 (1), 1e-02 (1) | 0.300 | 2 | 30 |" in table
    # One seed has no interval; two seeds of +0.08 each have a zero-width one: a gain.
    assert "| 250 | finetune | +0.100 | — | — | one seed: no interval | 1 |" in table
    assert "| 250 | frozen | +0.080 | [+0.080, +0.080] | — | gain | 2 |" in table
    assert "± 0.000" not in table
    printed = format_summary(summary)
    assert "test_acc 0.700 (one seed: no spread)  (1 seed, 30 epochs)" in printed
    assert "test_acc 0.520 ± 0.028  (2 seeds, 30 epochs)" in printed


def test_a_grid_of_one_mode_is_drawn_in_one_panel(tmp_path):
    # --modes frozen: one panel per figure, not the frozen one beside an empty half.
    metrics = pd.DataFrame(
        [
            {"init": init, "mode": "frozen", "seed": 0, "n_labels": n, "epoch": epoch}
            | {"train_loss": 0.5, "test_loss": 0.6, "test_acc": 0.6}
            for init in ("random", "byol")
            for n in (10, 20)
            for epoch in (1, 2)
        ]
    )
    drawn = {
        "loss_curves.png": lambda path: plot_loss_curves(metrics, path),
        "accuracy.png": lambda path: plot_accuracy(metrics, 2, path),
        "label_efficiency.png": lambda path: plot_label_efficiency(
            summarize(metrics), paired_summary(metrics), path
        ),
    }
    for name, draw in drawn.items():
        draw(tmp_path / name)
        height, width, _ = matplotlib.image.imread(tmp_path / name).shape
        assert width < 1.5 * height, name


def test_one_diverged_seed_does_not_stretch_the_log_loss_axis_to_its_floor(tmp_path, monkeypatch):
    # The default run's frozen BYOL probes: test losses 0.66, 0.73 and 15.6 (one seed at a rate of 1.0).
    # Mean - std is below 0 there; the band stops at the lowest seed instead of the axis's floor.
    losses = {0: 0.66, 1: 0.73, 2: 15.6}
    metrics = pd.DataFrame(
        [
            {"init": "byol", "mode": "frozen", "seed": seed, "n_labels": 250, "epoch": epoch}
            | {"train_loss": loss, "test_loss": loss, "test_acc": 0.6}
            for seed, loss in losses.items()
            for epoch in (1, 2)
        ]
    )
    bands = []
    real_fill = matplotlib.axes.Axes.fill_between

    def recording_fill(axis, x, low, high, **kwargs):
        bands.append((min(low), max(high)))
        return real_fill(axis, x, low, high, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", recording_fill)
    plot_loss_curves(metrics, tmp_path / "loss_curves.png")
    assert bands and all(low >= 0.66 - 1e-9 and high <= 15.6 + 1e-9 for low, high in bands)


def test_plot_results_without_metrics_is_a_clear_error(tmp_path):
    result = run_script("plot_results.py", "--out-dir", tmp_path)
    assert result.returncode == 2 and "train_classifier.py" in result.stderr
    assert_one_error_line(result.stderr)


def pretraining_metrics(epochs: int) -> pd.DataFrame:
    """byol_metrics.csv as train_byol.py writes it: epoch 0 (the random init, no loss) and `epochs`
    trained epochs of 10 steps, 60 s and 5 s of monitor each."""
    return pd.DataFrame(
        {
            "epoch": range(epochs + 1),
            "step": [10 * epoch for epoch in range(epochs + 1)],
            "loss": [math.nan, *(2.0 - 0.01 * epoch for epoch in range(1, epochs + 1))],
            "tau": 0.99,
            "lr": 0.1,
            "val_knn_labelled": 0.55,
            "feature_std": 0.02,
            "val_knn_k20": [0.5 + 0.01 * epoch for epoch in range(epochs + 1)],
            "val_knn_k200": 0.6,
            "feature_rank": 100.0,
            "images_per_s": [math.nan, *(40.0 + epoch for epoch in range(1, epochs + 1))],
            "seconds": [0.0, *(60.0 for _ in range(epochs))],
            "monitor_seconds": 5.0,
        }
    )


def test_plot_results_reports_a_pretraining_in_progress_without_a_comparison(tmp_path):
    pretraining_metrics(3).to_csv(tmp_path / "byol_metrics.csv", index=False)
    config = {"epochs": 8, "global_batch_size": 64, "precision": "bf16", "lr": 0.25}
    (tmp_path / "byol_config.json").write_text(json.dumps(config))
    result = run_script("plot_results.py", "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "byol_pretraining.png").stat().st_size > 10_000
    assert not (tmp_path / "loss_curves.png").exists()
    summary = (tmp_path / "summary.md").read_text()
    assert "No comparison yet: classifier_metrics.csv is not here" in summary
    assert "3 of 8 epochs: 30 steps of 64 images (1,920 images seen), 0.05 hours of training" in summary
    assert "42.0 images/s (median over epochs; 41.0–43.0), precision `bf16`" in summary
    assert "**Unfinished**: 5 epochs to go" in summary
    assert "| 0 | 0 | 0.00 | — | 0.550 | 0.500 | 0.600 | 100 |" in summary
    assert "| 3 | 30 | 0.05 | 1.970 | 0.550 | 0.530 | 0.600 | 100 |" in summary
    assert "lr: 0.25" in summary

    # A damaged comparison beside it: one line, and the pretraining's figure is not redrawn.
    drawn = (tmp_path / "byol_pretraining.png").stat().st_mtime_ns
    (tmp_path / "classifier_metrics.csv").write_text("a,b\n1,2\n")
    damaged = run_script("plot_results.py", "--out-dir", tmp_path)
    assert damaged.returncode == 2 and "classifier_metrics.csv lacks the column(s)" in damaged.stderr
    assert_one_error_line(damaged.stderr)
    assert (tmp_path / "byol_pretraining.png").stat().st_mtime_ns == drawn


def test_a_long_pretraining_shows_its_monitor_at_log_spaced_epochs():
    markdown = pretraining_markdown(pretraining_metrics(40), {"epochs": 40, "global_batch_size": 8})
    shown = [line.split("|")[1].strip() for line in markdown.splitlines() if line.startswith("| ")][1:]
    assert shown == ["0", "1", "2", "4", "8", "16", "32", "40"]
    assert "40 of 40 epochs" in markdown and "Unfinished" not in markdown
    short = pretraining_markdown(pretraining_metrics(5), {"epochs": 5, "global_batch_size": 8})
    assert "| 3 | 30 |" in short  # a short run shows every epoch


def test_plot_results_with_a_damaged_metrics_file_is_a_clear_error(tmp_path):
    (tmp_path / "classifier_metrics.csv").write_text("a,b\n1,2\n")
    result = run_script("plot_results.py", "--out-dir", tmp_path)
    assert result.returncode == 2 and "classifier_metrics.csv lacks the column(s) init, mode" in result.stderr
    assert_one_error_line(result.stderr)


def test_cross_validation_picks_the_best_held_out_accuracy_then_the_lower_loss():
    scores = {1e-4: (0.6, 0.5), 1e-3: (0.8, 0.6), 1e-2: (0.8, 0.4)}  # lr -> (accuracy, loss)
    seen = []

    def score_fold(lr, kept, held_out):
        seen.append((set(kept.tolist()), set(held_out.tolist())))
        return {"test_acc": scores[lr][0], "test_loss": scores[lr][1]}

    chosen, accuracies = cross_validate(
        list(scores), 10, 3, score_fold, Job(0, ClassifierConfig(widen_rates=0), CPU), "lr"
    )
    assert chosen == 1e-2 and list(accuracies.values()) == pytest.approx([0.6, 0.8, 0.8])
    for kept, held_out in seen:  # every fold trains on the rest and holds its own rows out
        assert not kept & held_out and kept | held_out == set(range(10))
    assert set().union(*(held for _, held in seen[:3])) == set(range(10))


@pytest.mark.parametrize(
    "best, widen, tried, chosen",
    [
        (3e-4, 2, [1e-4, 3e-4, 1e-3], 3e-4),  # inside the grid: nothing more to try
        (1e-5, 2, [1e-4, 3e-4, 1e-3, 1e-4 / 3, 1e-4 / 9], 1e-4 / 9),  # down two steps, still the edge
        (2e-4 / 3, 2, [1e-4, 3e-4, 1e-3, 1e-4 / 3], 1e-4),  # one step down, then it is inside
        (1e-1, 1, [1e-4, 3e-4, 1e-3, 1e-3 * 10 / 3], 1e-3 * 10 / 3),  # up, once at most
        (1e-5, 0, [1e-4, 3e-4, 1e-3], 1e-4),  # --widen-rates 0: the grid as given
    ],
)
def test_a_rate_chosen_on_the_grids_edge_widens_the_grid(best, widen, tried, chosen):
    seen = []

    def score(lr):  # held-out accuracy peaks at `best` (on a log scale)
        seen.append(lr)
        return -abs(math.log(lr / best)), 0.0

    scores = widened_grid([1e-4, 3e-4, 1e-3], score, widen)
    assert seen == pytest.approx(tried) and max(scores, key=scores.__getitem__) == pytest.approx(chosen)
    # The farthest widened_grid can reach: a choice there is still on the edge of what was tried.
    assert rate_grid_limits([1e-4, 3e-4, 1e-3], widen) == pytest.approx(
        (1e-4 / 3**widen, 1e-3 * (10 / 3) ** widen)
    )


def permute_test_labels(out: Path) -> None:
    """Shuffle the test images' labels in splits.csv (and re-sign it), as if the test split were another."""
    splits = pd.read_csv(out / "splits.csv")
    test = splits["split"] == "test"
    splits.loc[test, "label"] = 1 - splits.loc[test, "label"]  # every test label wrong
    splits.to_csv(out / "splits.csv", index=False)
    config = json.loads((out / "split_config.json").read_text())
    config["splits_sha256"] = splits_fingerprint(out / "splits.csv")
    (out / "split_config.json").write_text(json.dumps(config))


@pytest.mark.slow
def test_finetune_lr_is_chosen_on_the_labelled_images_only(pretrained):
    # Rates far apart, so that the folds tell them apart; both inits, 2 seeds sharing seed 0's choice.
    args = ["--out-dir", pretrained, "--seeds", "2", "--modes", "finetune", "--finetune-lrs", "1e-6,3e-2"]
    args += ["--finetune-folds", "2"]
    result = run_script("train_classifier.py", *args, *FAST)
    assert result.returncode == 0, result.stderr[-2000:]
    before = pd.read_csv(pretrained / "classifier_metrics.csv")
    permute_test_labels(pretrained)
    result = run_script("train_classifier.py", *args, *FAST, "--overwrite")
    assert result.returncode == 0, result.stderr[-2000:]
    after = pd.read_csv(pretrained / "classifier_metrics.csv")
    # The test scores follow the flipped labels (acc -> 1 - acc), the chosen rates do not move.
    last = before["epoch"] == before["epoch"].max()
    assert after.loc[last, "test_acc"].tolist() == pytest.approx((1 - before.loc[last, "test_acc"]).tolist())
    pd.testing.assert_series_equal(before["backbone_lr"], after["backbone_lr"])
    assert (before.groupby("init")["backbone_lr"].nunique() == 1).all()


def test_the_fine_tuning_length_is_chosen_after_the_rate_on_the_same_folds(monkeypatch):
    trained = []

    def fake_fine_tune(backbone, task, job):  # held-out accuracy rises with the rate and the length
        config = job.config
        trained.append((config.finetune_lrs[0], config.epochs, tuple(task.test.labels.tolist())))
        accuracy = 0.3 + config.finetune_lrs[0] * 10 + config.epochs / 100
        return [{"test_acc": accuracy, "test_loss": 1 - accuracy}]

    monkeypatch.setattr(finetune, "fine_tune", fake_fine_tune)
    train = Examples(torch.zeros(12, 3, 8, 8, dtype=torch.uint8), torch.arange(12))  # labels: row ids
    config = ClassifierConfig(epochs=10, finetune_lrs=[1e-4, 1e-3], finetune_epochs=[10, 20], widen_rates=1)
    lr, epochs = choose_finetune("random", None, train, 2, Job(0, config, CPU))
    # The rate at --epochs (widened once past its top edge: 1e-2), then the lengths at that rate, the
    # top edge widened once (40): 10 epochs at 1e-2 is not trained twice.
    assert (lr, epochs) == (pytest.approx(1e-2), 40)
    lengths = [(round(rate, 6), n) for rate, n, _ in trained]
    assert sorted(set(lengths)) == [(1e-4, 10), (1e-3, 10), (1e-2, 10), (1e-2, 20), (1e-2, 40)]
    assert len(trained) == 5 * 3 and len(set(trained)) == len(trained)  # 3 folds each, none twice
    held_out = {rows for *_, rows in trained}
    assert len(held_out) == 3 and sorted(sum(held_out, ())) == list(range(12))  # the same 3 folds
    # One length given: no choice, that length.
    one = replace(config, finetune_lrs=[1e-3], finetune_epochs=[25])
    assert choose_finetune("random", None, train, 2, Job(0, one, CPU)) == (1e-3, 25)


def test_a_length_widened_below_its_grid_trains_at_least_one_epoch():
    from byol.cross_validation import choose_rate_then_length

    tried = []

    def score(lr, epochs):  # shorter scores higher: the choice widens below the grid's 1 epoch
        tried.append(epochs)
        return 1 / epochs, 0.0

    config = ClassifierConfig(finetune_lrs=[1e-3], finetune_epochs=[1, 2], widen_rates=2)
    choice = choose_rate_then_length(config, score)
    assert choice.epochs == 1 and min(tried) == 1 and sorted(set(tried)) == [1, 2]


@pytest.mark.slow
def test_chosen_lengths_are_every_seeds_run_length_and_resume_keeps_them(pretrained):
    args = ["--out-dir", pretrained, "--seeds", "2", "--modes", "finetune", "--inits", "random"]
    args += [
        "--finetune-lrs",
        "1e-3",
        "--finetune-epochs",
        "1,3",
        "--finetune-folds",
        "2",
        "--widen-rates",
        "0",
    ]
    result = run_script("train_classifier.py", *args, *FAST)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = result.stdout + result.stderr
    assert "fine-tuning 1 epochs (1: " in printed or "fine-tuning 3 epochs (1: " in printed
    metrics = pd.read_csv(pretrained / "classifier_metrics.csv")
    lengths = metrics.groupby("seed")["epoch"].max()
    assert lengths.nunique() == 1 and lengths.iloc[0] in (1, 3)  # seed 0's choice, for every seed
    summary = pd.read_csv(pretrained / "classifier_summary.csv")
    assert summary["epochs"].tolist() == [lengths.iloc[0]]
    again = run_script("train_classifier.py", *args, *FAST, "--resume")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "nothing left to train" in again.stderr and "chosen by" not in again.stdout + again.stderr
    pd.testing.assert_frame_equal(pd.read_csv(pretrained / "classifier_metrics.csv"), metrics)


def test_lp_ft_starts_fine_tuning_from_the_probe_on_the_raw_features(tmp_path):
    images = make_demo_images(tmp_path / "images", per_class=16, size=36)
    split = read_split(write_split(images, tmp_path / "out", 32, 0))
    cache = load_cache(split, tmp_path / "out" / CACHE_DIR, 36, torch.device("cpu"))
    labels = torch.tensor(split.table["label"].to_numpy())
    backbone = resnet18_backbone()
    config = ClassifierConfig(epochs=20, batch_size=8, image_size=32, probe_lrs=[1e-2])
    head, lr = probe_head(backbone, Examples(cache, labels), 2, Job(0, config, CPU))
    features = extract_features(backbone, cache, range(len(cache)), 32, CPU)
    # The probe learnt on standardised features; folded into the head, it scores the raw ones as well.
    assert lr == 1e-2 and (head(features).argmax(1) == labels).float().mean() >= 0.9


def test_the_byol_init_is_byol_pt_and_the_image_size_follows_it(pretrained):
    weights = torch.load(pretrained / "byol.pt", weights_only=True)
    backbone, byol_config, _ = load_byol_backbone(pretrained / WEIGHTS_FILE)
    state = backbone.state_dict()
    byol = make_backbone("byol", 3, state).state_dict()
    random = make_backbone("random", 3, None).state_dict()
    assert all(torch.equal(byol[name], weights["backbone"][name]) for name in weights["backbone"])
    assert not torch.equal(random["conv1.weight"], byol["conv1.weight"])
    # Both inits train at the size byol.pt was pretrained at (32 px here), unless told otherwise.
    assert ClassifierConfig().resolved(byol_config).image_size == byol_config["image_size"] == 32
    assert ClassifierConfig(image_size=48).resolved(byol_config).image_size == 48


@pytest.mark.slow
def test_a_folder_of_three_classes_trains_every_condition(image_folder, tmp_path):
    folder = image_folder(per_class=12, size=40)
    shutil.copytree(folder / sorted(p.name for p in folder.iterdir())[0], folder / "third")
    out = write_split(folder, tmp_path / "out", 9, 9)
    args = ["--out-dir", out, "--inits", "random", "--seeds", "1", "--epochs", "1", "--batch-size", "4"]
    result = run_script("train_classifier.py", *args, "--image-size", "32", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    metrics = pd.read_csv(out / "classifier_metrics.csv")
    assert set(metrics["mode"]) == {"finetune", "frozen"} and metrics["test_acc"].between(0, 1).all()


def test_recalibrated_batchnorm_holds_the_datas_statistics():
    images = torch.randint(0, 256, (40, 3, 36, 36), dtype=torch.uint8)
    backbone = recalibrate_batchnorm(resnet18_backbone(), images, range(40), 32, CPU)
    assert not backbone.training
    with torch.no_grad():
        first = backbone.conv1(eval_view(images, 32))  # the first BatchNorm's input, all 40 images
    assert torch.allclose(backbone.bn1.running_mean, first.mean((0, 2, 3)), atol=1e-4)
    assert backbone.bn1.momentum == resnet18_backbone().bn1.momentum  # restored


def test_frozen_random_recalibrates_batchnorm_only_when_the_validation_split_prefers_it(
    tmp_path, monkeypatch
):
    out = write_split(
        make_demo_images(tmp_path / "images", per_class=24, size=40), tmp_path / "results", 12, 12, 8
    )
    config = ClassifierConfig(
        inits=["random"], modes=["frozen"], epochs=3, batch_size=8, image_size=32, cache_size=36, bn_images=16
    )
    grid, _, _ = load_grid(config, out, CPU, RunOptions())
    train_rows = balanced_subset(grid.split, 12, 0, "split")
    rows_of = Split.indices

    def no_test_rows(self, *splits):  # the choice may read validation, never test
        assert "test" not in splits
        return rows_of(self, *splits)

    monkeypatch.setattr(Split, "indices", no_test_rows)
    key, _ = grid.frozen_random(0, make_backbone("random", 0, None), train_rows)
    monkeypatch.undo()
    recalibrated = grid.recalibrated[0]
    assert recalibrated.bn1.running_var.sub(1).abs().max() > 1e-3  # not the initial statistics
    validation = grid.split.indices("validation")
    scores = {}
    for candidate, backbone in (
        (("random", 0), make_backbone("random", 0, None)),
        (("random", 0, "bn"), recalibrated),
    ):
        task = Task(
            grid.features(candidate, backbone, train_rows), grid.features(candidate, backbone, validation), 2
        )
        scores[candidate] = train_probe(task, Job(0, grid.config, CPU))[-1]["test_acc"]
    assert key == (
        ("random", 0, "bn") if scores[("random", 0, "bn")] > scores[("random", 0)] else ("random", 0)
    )
    # --bn-images 0, or a split without validation images: the initial statistics, no choice made.
    plain = replace(grid, config=replace(grid.config, bn_images=0), recalibrated={})
    assert plain.frozen_random(0, make_backbone("random", 0, None), train_rows)[0] == ("random", 0)
    assert not plain.recalibrated


@pytest.mark.slow
def test_scored_on_validation_a_grid_never_reads_a_test_row(tmp_path, monkeypatch):
    # recipe_search's probes choose a recipe: scored on the validation split, the test split untouched.
    out = write_split(
        make_demo_images(tmp_path / "images", per_class=24, size=40), tmp_path / "results", 12, 12, 8
    )
    rows_of = Split.indices

    def no_test_rows(self, *splits):
        assert "test" not in splits, "a choosing run read the test split"
        return rows_of(self, *splits)

    monkeypatch.setattr(Split, "indices", no_test_rows)
    config = ClassifierConfig(
        inits=["random"],
        seeds=1,
        epochs=1,
        batch_size=8,
        image_size=32,
        cache_size=36,
        finetune_lrs=[1e-3],
        score_split="validation",
        bn_images=16,
    )
    run_classifiers(config, out, RunOptions(device_name="cpu"))
    monkeypatch.undo()
    predictions = pd.read_csv(out / "classifier_predictions.csv")
    assert predictions["row"].tolist() == read_split(out).indices("validation")
    assert json.loads((out / "classifier_config.json").read_text())["score_split"] == "validation"


def test_a_resume_whose_settings_file_is_lost_is_refused_not_started_over(tmp_path):
    from byol.grid_resume import finished_rows

    (tmp_path / "classifier_metrics.csv").write_text(",".join(CLASSIFIER_METRIC_COLUMNS) + "\n")
    with pytest.raises(UserError, match="classifier_config.json is missing.*start over with --overwrite"):
        finished_rows(ClassifierConfig(), tmp_path, {}, 1, "0" * 64)
    (tmp_path / "classifier_metrics.csv").unlink()
    assert finished_rows(ClassifierConfig(), tmp_path, {}, 1, "0" * 64) == []  # nothing earlier: nothing kept
