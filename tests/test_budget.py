"""Time budgets, the CPU setting and the plan line (byol/budget.py, train_byol.py --setting/--time-budget)."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace

import pandas as pd
import pytest
from conftest import TINY_BYOL, assert_one_error_line, run_script

from byol import pretrain as pretrain_module
from byol.budget import Speed, epochs_for_budget, parse_duration
from byol.errors import Stopped
from byol.files import load_torch
from byol.pretrain import PretrainConfig, RunOptions, pretrain
from train_byol import parse_args, setting_recipe

TINY = {
    "batch_size": 8,
    "image_size": 32,
    "cache_size": 36,
    "max_images": 32,
    "knn_every": 0,
}  # 4 steps/epoch


@pytest.mark.parametrize(
    "text, seconds", [("90s", 90), ("20m", 1200), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400), ("45", 2700)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_the_budget_buys_the_epochs_the_measured_speed_allows():
    speed = Speed(images_per_s=100.0, monitor_seconds=10.0)  # an epoch: 350 steps x 64 / 100 + 10 = 234 s
    assert epochs_for_budget(3600, speed, 350, 64) == 15  # (3600 - 10) / 234 = 15.3
    assert epochs_for_budget(60, speed, 350, 64) == 1  # at least one


def fake_speed(images_per_s: float, monitor_seconds: float = 0.0, asked: list | None = None):
    """measure_speed's stand-in; `asked` collects the steps_left each call was given."""

    def measure(run, steps_left=None):
        if asked is not None:
            asked.append(steps_left)
        return Speed(images_per_s, monitor_seconds)

    return measure


@pytest.mark.slow
def test_a_budgeted_run_fixes_its_epochs_first_and_resumes_exactly(split_dir, tmp_path, monkeypatch, caplog):
    out = split_dir()
    straight = tmp_path / "straight"
    shutil.copytree(out, straight)
    # 16 images an epoch at 16 images/s: 1 s an epoch, so a 2.5-second budget buys 2 epochs.
    asked = []  # the probe's length: 16 steps where the budget waits on it (None), a 20th of the rest after
    monkeypatch.setattr(pretrain_module, "measure_speed", fake_speed(16.0, asked=asked))
    tiny = {**TINY, "max_images": 16}  # 2 steps an epoch
    pretrain(PretrainConfig(**tiny), straight, RunOptions(device_name="cpu", time_budget_s=2.5))
    weights = load_torch(straight / "byol.pt")
    assert weights["config"]["epochs"] == 2 and weights["step"] == 4
    assert json.loads((straight / "byol_config.json").read_text())["time_budget_s"] == 2.5
    assert pd.read_csv(straight / "byol_metrics.csv")["tau"].iloc[-1] == 1.0  # the schedule ended on time
    with pytest.raises(Stopped):
        options = RunOptions(device_name="cpu", time_budget_s=2.5, stop_after_epochs=1)
        pretrain(PretrainConfig(**tiny), out, options)
    # Resumed on a machine that measures twice as fast (5 epochs' worth): it keeps its 2 epochs.
    monkeypatch.setattr(pretrain_module, "measure_speed", fake_speed(32.0, asked=asked))
    pretrain(PretrainConfig(**tiny), out, RunOptions(device_name="cpu", time_budget_s=2.5, resume=True))
    assert asked == [None, None, 2]  # the resumed run's epochs are known: its 2 steps left
    resumed = load_torch(out / "byol.pt")
    # Resumed once finished (make pipeline run again): nothing measured, nothing trained, said so.
    with caplog.at_level(logging.INFO, logger="byol"):
        pretrain(PretrainConfig(**tiny), out, RunOptions(device_name="cpu", time_budget_s=2.5, resume=True))
    assert asked == [None, None, 2] and "plan: all 4 steps already done: nothing left to train" in caplog.text
    assert load_torch(out / "byol.pt")["step"] == 4
    assert resumed["config"]["epochs"] == 2
    assert all(pretrain_module.torch.equal(resumed["backbone"][k], v) for k, v in weights["backbone"].items())


def test_the_cpu_setting_gives_the_recipe_and_every_flag_given_wins():
    recipe = setting_recipe("cpu")  # configs/cpu.args
    assert recipe["time_budget"] == 2 * 3600 and recipe["predictor_lr_scale"] == 10 and len(recipe) == 13
    args, setting = parse_args(["--device", "cpu"])
    assert setting == "cpu" and {name: getattr(args, name) for name in recipe} == recipe
    args, _ = parse_args(["--device", "cpu", "--time-budget", "20m", "--batch-size", "32"])
    assert (args.time_budget, args.batch_size, args.image_size) == (1200, 32, 64)
    args, _ = parse_args(["--device", "cpu", "--epochs", "3"])  # an explicit --epochs overrides the budget
    assert (args.epochs, args.time_budget) == (3, 0.0)
    args, _ = parse_args(["--device", "cpu", "--optimizer", "adamw"])  # its own rate, not LARS's
    assert (args.lr, args.lars_trust) == (0.0, PretrainConfig.lars_trust)
    args, _ = parse_args(["--device", "cpu", "--image-size", "96"])  # cache and blur follow the size
    assert (args.cache_size, args.blur_sigma_min, args.blur_sigma_max) == (0, 0.043, 0.857)
    args, setting = parse_args(["--device", "cpu", "--setting", "reference"])  # the library's defaults
    assert setting == "reference" and (args.image_size, args.batch_size, args.epochs, args.time_budget) == (
        150,
        256,
        100,
        0.0,
    )


def test_the_gpu_setting_is_the_cpu_recipe_scaled_to_its_batch_by_the_written_rule():
    cpu, gpu = setting_recipe("cpu"), setting_recipe("gpu")
    scale = gpu["batch_size"] / cpu["batch_size"]
    assert gpu["lr"] == pytest.approx(cpu["lr"] * scale)  # linear scaling
    assert gpu["tau_base"] == pytest.approx(cpu["tau_base"] ** scale, abs=5e-4)  # tau^k
    same = {name for name in cpu if name not in ("batch_size", "lr", "tau_base", "time_budget")}
    assert {name: gpu[name] for name in same} == {name: cpu[name] for name in same}
    args, setting = parse_args(["--setting", "gpu"])
    assert (setting, args.epochs, args.time_budget, args.batch_size) == ("gpu", 97, 0.0, 256)
    args, _ = parse_args(["--setting", "gpu", "--time-budget", "10m"])  # a budget sizes the run instead
    assert (args.epochs, args.time_budget) == (PretrainConfig.epochs, 600)


def test_the_cpu_setting_is_the_long_run_recipe_file():
    args, _ = parse_args(["--device", "cpu", "@configs/long_byol.args"])
    recipe = {name: value for name, value in setting_recipe("cpu").items() if name != "time_budget"}
    assert {name: getattr(args, name) for name in recipe} == recipe
    assert args.epochs == 86 and args.time_budget == 0.0  # the file fixes its epochs


@pytest.mark.slow
def test_the_plan_is_printed_before_the_first_step_and_saved_with_the_setting(split_dir):
    out = split_dir()
    tiny = [flag for flag in TINY_BYOL if flag not in ("--setting", "reference")]
    args = ["--out-dir", out, "--epochs", "2", "--knn-every", "0", *tiny]
    result = run_script("train_byol.py", *args, "--stop-after-epochs", "1")
    assert result.returncode == 0, result.stderr
    plan = result.stderr.index("plan: ")
    assert plan < result.stderr.index("BYOL epoch 1/2")
    line = result.stderr[plan:].splitlines()[0]
    assert "steps/epoch x 2 epochs = 8 steps of 8 images" in line and "finishing about" in line
    config = json.loads((out / "byol_config.json").read_text())
    assert config["setting"] == "cpu" and config["tau_base"] == setting_recipe("cpu")["tau_base"]
    # A rerun after the pause says how much is done, before it trains the rest.
    again = run_script("train_byol.py", *args, "--resume")
    assert again.returncode == 0, again.stderr
    assert "4 of 8 steps already done" in again.stderr.split("BYOL epoch 2/2")[0]


def test_a_bad_time_budget_is_one_line(split_dir):
    result = run_script("train_byol.py", "--out-dir", split_dir(), "--time-budget", "soon", *TINY_BYOL)
    assert (
        result.returncode == 2
        and "--time-budget: not a duration like 20m, 2h or 1h30m: 'soon'" in result.stderr
    )
    assert_one_error_line(result.stderr)


def test_stage_3_estimates_its_runs_choices_and_feature_passes_from_the_measured_speed():
    from byol.finetune import ClassifierConfig
    from byol.grid_plan import GridSpeed, GridWork, grid_seconds

    config = ClassifierConfig(
        epochs=2, batch_size=4, eval_every=1, finetune_lrs=[1e-4, 1e-3], finetune_folds=3
    )
    speed = GridSpeed(step_seconds=0.5, score_images_per_s=100.0)
    # A fine-tuning run on 6 images: 2 epochs x 2 steps x 0.5 s, scored on 12 test images twice: 2.24 s.
    # A feature pass over 24 images: 0.24 s. A rate choice on 6 images: 2 rates x 3 folds, each 2 epochs
    # x 1 step on 4 images (0.5 s a step) and one scoring of its 2 held-out images: 6 x 1.02 s.
    work = GridWork(
        n_test=12, finetune_runs=[(6, 2)], feature_passes={("random", 0): 24}, choices={("byol", 6): 6}
    )
    assert grid_seconds(speed, config, 4, work) == pytest.approx(2.24 + 0.24 + 6.12)
    assert grid_seconds(speed, config, 4, GridWork(n_test=12)) == 0
    # Choosing the length too (2 or 4 epochs): the rates' folds at 2 epochs are reused, the 3 folds at 4
    # epochs (4 steps and one scoring: 2.02 s) added; a run of 4 epochs costs 4 x 2 x 0.5 + 4 x 0.12.
    lengths = replace(config, finetune_epochs=[2, 4])
    assert grid_seconds(speed, lengths, 4, work) == pytest.approx(2.24 + 0.24 + 6.12 + 3 * 2.02)
    longer = replace(work, finetune_runs=[(6, 4)], choices={})
    assert grid_seconds(speed, lengths, 4, longer) == pytest.approx(4.48 + 0.24)
    # A probe fit trained on 6 feature vectors and scoring 12: 2 epochs x 6 + 2 scorings x 12, at 0.01 s.
    probes = GridWork(n_test=12, probe_fits=[(6, 12)])
    assert grid_seconds(replace(speed, probe_image_epoch_seconds=0.01), config, 4, probes) == pytest.approx(
        0.36
    )


def test_a_frozen_probe_counts_the_fits_its_rate_choice_takes():
    from byol.finetune import PROBE_FOLDS, ClassifierConfig
    from byol.grid_plan import probe_fits

    three_rates = ClassifierConfig(probe_lrs=[1e-4, 1e-3, 1e-2])
    fits = probe_fits(three_rates, 250, 2500)
    assert fits[0] == (250, 2500) and fits[1:] == [(200, 50)] * (3 * PROBE_FOLDS)
    assert probe_fits(ClassifierConfig(probe_lrs=[1e-3]), 250, 2500) == [(250, 2500)]  # nothing to choose


@pytest.mark.slow
def test_stage_3_prints_its_plan_before_the_first_run_and_what_is_done_on_a_rerun(split_dir, monkeypatch):
    from byol import grid_plan
    from byol.grid_plan import GridSpeed

    monkeypatch.setattr(grid_plan, "measure_grid_speed", lambda *args: GridSpeed(0.5, 100.0))
    out = split_dir(n_labelled=8)
    args = ["--out-dir", out, "--inits", "random", "--seeds", "2", "--epochs", "2", "--batch-size", "4"]
    args += ["--image-size", "32", "--device", "cpu"]
    result = run_script("train_classifier.py", *args)
    assert result.returncode == 0, result.stderr
    counts = "plan: 4 runs (1 inits x 2 modes x 2 seeds x 1 label counts)"
    plan = result.stderr.index(f"{counts}, scored on the test split, 1 fine-tuning")
    assert plan < result.stderr.index("random finetune seed 0")
    again = run_script("train_classifier.py", *args, "--resume")
    assert "plan: 4 runs (1 inits x 2 modes x 2 seeds x 1 label counts), 4 already done: nothing left" in (
        again.stderr
    )


@pytest.mark.slow
@pytest.mark.measured_speed
def test_the_speed_is_measured_on_the_runs_own_pipeline_without_touching_its_state(split_dir, monkeypatch):
    from byol import budget
    from byol.budget import measure_speed
    from byol.distributed import SINGLE_PROCESS
    from byol.pretrain import build_run

    out = split_dir()
    config = PretrainConfig(**TINY).resolved()
    options = RunOptions(precision_name="fp32")
    run = build_run(config, out, SINGLE_PROCESS, pretrain_module.torch.device("cpu"), options)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    rng = pretrain_module.torch.get_rng_state()
    calls = []
    real_step = budget.train_step
    monkeypatch.setattr(budget, "train_step", lambda *args: calls.append(1) or real_step(*args))
    speed = measure_speed(run)  # a budgeted run's: 2 warm-up steps, then 16 timed
    assert speed.images_per_s > 0 and speed.monitor_seconds > 0 and len(calls) == 2 + 16
    measure_speed(run, steps_left=28)  # a 28-step run without a budget (make demo's) times 4, not 16
    assert len(calls) == 2 + 16 + 2 + 4
    assert all(pretrain_module.torch.equal(before[k], v) for k, v in run.model.state_dict().items())
    assert pretrain_module.torch.equal(pretrain_module.torch.get_rng_state(), rng)


def test_the_probe_times_16_steps_for_a_budget_and_a_twentieth_of_a_short_runs_steps():
    from byol.budget import probe_steps

    assert probe_steps(None) == 16  # the budget's epochs wait on it
    assert [probe_steps(left) for left in (0, 28, 100, 200, 320, 3432)] == [4, 4, 5, 10, 16, 16]


@pytest.mark.measured_speed
def test_stage_3_measures_its_speed_on_the_labelled_images(split_dir):
    import torch

    from byol.distributed import Runtime
    from byol.finetune import ClassifierConfig, Examples
    from byol.grid_plan import measure_grid_speed

    images = torch.randint(0, 256, (12, 3, 36, 36), dtype=torch.uint8)
    rng = torch.get_rng_state()
    speed = measure_grid_speed(
        Examples(images, torch.arange(12) % 3),
        3,
        ClassifierConfig(batch_size=4, image_size=32),
        Runtime(torch.device("cpu")),
    )
    assert speed.step_seconds > 0 and speed.score_images_per_s > 0
    assert torch.equal(torch.get_rng_state(), rng)
