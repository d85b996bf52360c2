"""What the stage scripts share (byol/cli.py): one line and exit status 2 instead of a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from byol.cli import run_stage
from byol.errors import Stopped, UserError
from byol.pretrain import PretrainConfig
from byol.resume import StopRequest

TRIALS = sorted((ROOT / "configs" / "trials").glob("*.args"))


def raising(error: Exception):
    def main() -> None:
        raise error

    return main


@pytest.mark.parametrize(
    "error, message",
    [
        (UserError("--epochs 0: must be 1 or more"), "error: --epochs 0: must be 1 or more"),
        (
            torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail"),
            "error: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB); start again with a lower",
        ),
        (
            RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
            "error: out of memory ([enforce fail",
        ),
    ],
)
def test_user_errors_and_out_of_memory_are_one_line_and_exit_2(capsys, error, message):
    with pytest.raises(SystemExit) as exit_info:
        run_stage(raising(error))
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(message) and stderr.count("\n") == 1


@pytest.mark.parametrize("code", [143, 130, 0])
def test_a_stopped_run_exits_with_its_code_and_says_how_to_continue(capsys, code):
    with pytest.raises(SystemExit) as exit_info:
        run_stage(raising(Stopped("stopped by SIGTERM; checkpoint saved, continue with --resume", code)))
    assert exit_info.value.code == code
    assert capsys.readouterr().err == "stopped by SIGTERM; checkpoint saved, continue with --resume\n"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_are_caught_as_a_request_to_stop(sig):
    before = signal.getsignal(sig)
    with StopRequest() as stop:
        os.kill(os.getpid(), sig)  # delivered to the handler, not a KeyboardInterrupt or a kill
        assert stop.signal_name == signal.Signals(sig).name and stop.exit_code == 128 + sig
    assert signal.getsignal(sig) is before  # the previous handler is back


def test_other_runtime_errors_keep_their_traceback():
    with pytest.raises(RuntimeError, match="a bug"):
        run_stage(raising(RuntimeError("a bug")))


def test_flags_from_a_file_with_comments_and_later_flags_winning(tmp_path):
    from train_byol import get_args_parser

    recipe = tmp_path / "recipe.args"
    recipe.write_text("# a recipe\n--epochs 12 --batch-size 64  # per process\n\n--image-size 64\n")
    args = get_args_parser().parse_args([f"@{recipe}", "--epochs", "3"])
    assert (args.epochs, args.batch_size, args.image_size) == (3, 64, 64)


@pytest.mark.parametrize("recipe", TRIALS, ids=lambda path: path.stem)
def test_every_trial_file_is_a_valid_recipe(recipe):
    config = recipe_config(recipe)  # the checks train_byol.py makes before it trains
    assert config["epochs"] >= 1 and config["image_size"] <= config["cache_size"]


def recipe_config(path: Path) -> dict:
    """The resolved PretrainConfig that `train_byol.py @path` runs with on a CPU: the CPU setting's
    defaults for every flag the file leaves out, as every committed run here had (a recipe file that
    leans on a default the setting has since changed no longer reproduces its run)."""
    from train_byol import parse_args

    args, _ = parse_args(["--device", "cpu", f"@{path}"])
    config = PretrainConfig(**{name: getattr(args, name) for name in PretrainConfig.__dataclass_fields__})
    return asdict(config.resolved())


@pytest.mark.parametrize(
    "recipe, run",
    [("configs/study_byol.args", "results/archive/study_12_epochs")]
    + [
        (f"configs/trials/{p.stem}.args", f"results/archive/recipe_search/{p.stem}")
        for p in TRIALS
        if (ROOT / "results" / "archive" / "recipe_search" / p.stem).is_dir()
    ],
)
def test_recipe_files_give_the_settings_of_the_committed_runs(recipe, run):
    # The oldest trials' files lack the flags added after them (--lars-trust, the blur range), which
    # then had today's defaults.
    committed = {**asdict(PretrainConfig()), **json.loads((ROOT / run / "byol_config.json").read_text())}
    ignored = {"knn_every", "diag_voters", "sync_bn"}  # monitoring and DDP: not what is learnt
    given = recipe_config(ROOT / recipe)
    assert {k: v for k, v in given.items() if k not in ignored} == {
        k: committed[k] for k in given if k not in ignored
    }


# configs/time_trials/: what each equal-time trial changes in the CPU setting (a batch size with the
# rate and EMA scaled to it by configs/gpu.args's rule).
TIME_TRIAL_CHANGES = {
    "progressive": {"progressive_sizes": [32, 48]},
    "batch32": {"batch_size": 32, "lr": 0.125, "tau_base": 0.995},
    "batch128": {"batch_size": 128, "lr": 0.5, "tau_base": 0.9801},
    "warmup2": {"warmup_fraction": 0.02},
    "warmup_half": {"warmup_fraction": 0.5},
    "lr_half": {"lr": 0.125},
    "lr_quarter": {"lr": 0.0625},
    "lr_half_progressive": {"lr": 0.125, "progressive_sizes": [32, 48]},
    "base_seed1": {"seed": 1},
    "lr_half_seed1": {"lr": 0.125, "seed": 1},
}


def test_each_equal_time_trial_is_the_cpu_setting_with_one_change_for_40_minutes():
    from train_byol import parse_args

    folder = ROOT / "configs" / "time_trials"
    base = recipe_config(folder / "base.args")
    assert base == recipe_config(ROOT / "configs" / "cpu.args")
    assert sorted(path.stem for path in folder.glob("*.args")) == sorted(["base", *TIME_TRIAL_CHANGES])
    for name, changes in TIME_TRIAL_CHANGES.items():
        assert recipe_config(folder / f"{name}.args") == {**base, **changes}, name
    for path in folder.glob("*.args"):
        args, setting = parse_args(["--device", "cpu", f"@{path}"])
        assert (args.time_budget, setting) == (40 * 60, "cpu"), path.name


def test_make_time_trials_runs_each_trial_at_its_files_budget_or_at_time_budget(tmp_path):
    from train_byol import parse_args

    def budgets(*variables: str) -> list[float]:
        """Each trial's --time-budget in the train_byol.py commands `make -n time-trials` prints."""
        bin_dir = Path(sys.executable).parent
        command = ["make", "-n", "-C", ROOT, "-o", f"{bin_dir}/python", "time-trials", f"BIN={bin_dir}"]
        command += ["TIME_TRIALS=lr_half warmup_half", f"TIME_TRIALS_DIR={tmp_path}", *variables]
        printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        trials = [text.split(")")[0].replace('"', "").split() for text in printed.split("train_byol.py")[1:]]
        return [parse_args(flags)[0].time_budget for flags in trials]

    assert budgets() == [40 * 60, 40 * 60]
    assert budgets("TIME_BUDGET=2h") == [2 * 3600, 2 * 3600]


def test_the_long_run_is_the_chosen_trial_for_longer():
    long_run = recipe_config(ROOT / "configs" / "long_byol.args")
    chosen = recipe_config(ROOT / "configs" / "trials" / "steps1400_pred10.args")
    assert (
        long_run["epochs"] == 86
        and long_run["predictor_lr_scale"] == 10
        and {**long_run, "epochs": chosen["epochs"]} == chosen
    )
    from train_byol import get_args_parser

    assert get_args_parser().parse_args([f"@{ROOT / 'configs' / 'long_byol.args'}"]).snapshots == "log2"


# Run in a new process, which is where the cost is: the test process has imported torch already.
WITHOUT_TORCH = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exit_:
    assert not exit_.code, exit_.code
print(sorted(name for name in ("torch", "torchvision") if name in sys.modules))
"""


@pytest.mark.slow  # two new processes
def test_the_report_and_the_split_never_import_torch(image_folder, tmp_path):
    """plot_results.py (the report, `make study`) and data_split.py (decoding) need neither torch nor
    torchvision, which cost a new process 10-20 s on a small CPU: `make study` takes seconds."""
    report = tmp_path / "report"
    report.mkdir()
    for stage in ("byol", "classifier", "ceiling"):
        for name in (f"{stage}_config.json", f"{stage}_metrics.csv"):
            shutil.copy(ROOT / "results" / "archive" / "study_12_epochs" / name, report)
    shutil.copy(ROOT / "results" / "long_run" / "compute_curve.csv", report)
    runs = {
        "plot_results.py": ["--out-dir", report],
        "data_split.py": ["--data-dir", image_folder(per_class=12), "--out-dir", tmp_path / "split"]
        + ["--n-labelled", "4", "--n-validation", "4", "--n-test", "4"],
    }
    for script, args in runs.items():
        command = [sys.executable, "-c", WITHOUT_TORCH, str(ROOT / script), *map(str, args)]
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.splitlines()[-1] == "[]", f"{script} imported {result.stdout.splitlines()[-1]}"
    assert (report / "summary.md").is_file() and (report / "compute_curve.png").is_file()
    assert (tmp_path / "split" / "splits.csv").is_file()
