"""BYOL pretraining end to end on tiny generated data (byol/pretrain.py, byol/cache.py, train_byol.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pandas as pd
import pytest
import torch
from conftest import TINY_BYOL, assert_one_error_line, run_script, write_split
from PIL import Image
from torch import nn
from torchvision.models import resnet18

from byol import cache as cache_module
from byol import capacity, pretrain_config
from byol import pretrain as pretrain_module
from byol.cache import build_cache, cache_paths, load_cache
from byol.capacity import byol_step_bytes, readable_size
from byol.data import Split, read_split
from byol.errors import Stopped, UserError
from byol.files import load_torch
from byol.model import BYOL, RESNET18_FEATURES, resnet18_backbone
from byol.pretrain import PretrainConfig, RunOptions, pretrain, pretraining_indices
from byol.run_options import CACHE_DIR


def tiny_config(**overrides) -> PretrainConfig:
    settings = {"epochs": 2, "batch_size": 8, "image_size": 32, "cache_size": 36, "max_images": 32}
    return PretrainConfig(**{**settings, **overrides})


@pytest.mark.slow
def test_train_byol_writes_weights_that_load_into_stock_resnet18(split_dir):
    out = split_dir()
    result = run_script("train_byol.py", "--out-dir", out, "--epochs", "2", *TINY_BYOL)
    assert result.returncode == 0, result.stderr
    weights = load_torch(out / "byol.pt")
    stock = resnet18()
    stock.fc = nn.Identity()
    stock.load_state_dict(weights["backbone"], strict=True)
    assert weights["config"]["epochs"] == 2 and weights["arch"] == "resnet18"
    metrics = pd.read_csv(out / "byol_metrics.csv")
    expected = {
        "epoch",
        "loss",
        "tau",
        "lr",
        "val_knn_labelled",
        "images_per_s",
        "seconds",
        "feature_std",
        "feature_rank",
        "val_knn_k20",
        "val_knn_k200",
        "monitor_seconds",
    }
    assert expected <= set(metrics.columns)
    assert metrics["epoch"].tolist() == [0, 1, 2]
    for column in ("val_knn_labelled", "val_knn_k20", "val_knn_k200"):  # epoch 0 (random init) included
        assert metrics[column].between(0, 1).all(), column
    assert (metrics["feature_rank"] >= 1).all() and (metrics["monitor_seconds"] > 0).all()
    assert (out / "byol_config.json").is_file() and (out / "byol_checkpoint.pt").is_file()


@pytest.mark.slow
def test_pretraining_and_its_monitor_never_read_a_test_row(split_dir, monkeypatch):
    # The monitor chooses recipes and checkpoints: it scores the validation split. Asking the split for
    # its test rows anywhere in pretraining (the training pool, the voters, the monitor) fails here.
    rows_of = Split.indices

    def guarded(split, *names):
        assert "test" not in names, f"pretraining asked for the test rows ({names})"
        return rows_of(split, *names)

    monkeypatch.setattr(Split, "indices", guarded)
    out = split_dir()
    pretrain(tiny_config(epochs=1, max_images=8, diag_voters=16), out, RunOptions(device_name="cpu"))
    metrics = pd.read_csv(out / "byol_metrics.csv")
    assert metrics["val_knn_labelled"].notna().all() and metrics["val_knn_k20"].notna().all()
    assert json.loads((out / "byol_config.json").read_text())["pretraining_images"] == 8


@pytest.mark.longest
@pytest.mark.slow
def test_loss_falls_and_features_do_not_collapse(split_dir):
    out = split_dir(per_class=40)
    # At lr 2e-3 this tiny run plateaus after epoch 1 on some machines (1.88-1.90); at 1e-3 it keeps falling.
    pretrain(
        # the monitor at the start and the end only: the first and last feature spreads are all it needs
        tiny_config(epochs=6, max_images=64, optimizer="adamw", lr=1e-3, knn_every=0),
        out,
        RunOptions(device_name="cpu"),
    )
    metrics = pd.read_csv(out / "byol_metrics.csv")
    losses = metrics["loss"].dropna().tolist()
    # Past the first epoch's fast drop (the predictor catching up), the loss still falls.
    assert losses[-1] < 0.9 * losses[0] and min(losses[3:]) < losses[1], losses
    # Collapse would send the per-dimension spread of the normalised features to 0.
    assert metrics["feature_std"].iloc[-1] > 0.5 * metrics["feature_std"].iloc[0] > 0


@pytest.mark.slow
def test_diagnostic_knn_votes_with_many_non_test_images_and_can_be_turned_off(split_dir):
    out = split_dir(per_class=40)
    pretrain(tiny_config(epochs=1, max_images=8, diag_voters=48), out, RunOptions(device_name="cpu"))
    metrics = pd.read_csv(out / "byol_metrics.csv")
    # Voters from every non-test image, not only the 16 pretrained on; k=200 is capped at the 48 voters.
    assert metrics["val_knn_k20"].notna().all() and metrics["val_knn_k200"].notna().all()
    options = RunOptions(device_name="cpu", overwrite=True)
    pretrain(tiny_config(epochs=1, max_images=8, diag_voters=0), out, options)
    metrics = pd.read_csv(out / "byol_metrics.csv")
    assert metrics["val_knn_k20"].isna().all() and metrics["val_knn_labelled"].notna().all()


@pytest.mark.slow
@pytest.mark.parametrize("knn_every, monitored_epochs", [(0, [0, 3]), (2, [0, 2, 3])])
def test_knn_monitor_runs_at_the_start_every_n_epochs_and_at_the_end(split_dir, knn_every, monitored_epochs):
    out = split_dir()
    # One step an epoch (8 images): which epochs are monitored does not depend on the steps in them.
    pretrain(tiny_config(epochs=3, knn_every=knn_every, max_images=8), out, RunOptions(device_name="cpu"))
    metrics = pd.read_csv(out / "byol_metrics.csv")
    assert metrics.loc[metrics["val_knn_labelled"].notna(), "epoch"].tolist() == monitored_epochs


@pytest.mark.slow
def test_two_epochs_equal_one_epoch_then_resume(split_dir, tmp_path):
    out = split_dir()
    straight = tmp_path / "straight"
    shutil.copytree(out, straight)
    config = tiny_config(max_images=16)  # 2 steps an epoch
    pretrain(config, straight, RunOptions(device_name="cpu", snapshot_epochs="log2"))

    with pytest.raises(Stopped) as paused:
        pretrain(config, out, RunOptions(device_name="cpu", stop_after_epochs=1, snapshot_epochs="1"))
    assert paused.value.exit_code == 0 and not (out / "byol.pt").exists()
    pretrain(PretrainConfig(), out, RunOptions(device_name="cpu", resume=True))  # the saved config wins
    assert_same_weights(straight, out)
    # Snapshots: byol.pt's format after the epochs asked for; the last one is byol.pt's backbone.
    assert sorted(path.name for path in (straight / "snapshots").iterdir()) == [
        "byol_epoch0001.pt",
        "byol_epoch0002.pt",
    ]
    assert [path.name for path in (out / "snapshots").iterdir()] == ["byol_epoch0001.pt"]
    first, last = (load_torch(straight / "snapshots" / f"byol_epoch000{n}.pt") for n in (1, 2))
    assert (first["epoch"], first["step"], last["epoch"]) == (1, 2, 2)
    assert all(
        torch.equal(last["backbone"][k], v) for k, v in load_torch(straight / "byol.pt")["backbone"].items()
    )
    resumed_first = load_torch(out / "snapshots" / "byol_epoch0001.pt")["backbone"]
    assert all(torch.equal(resumed_first[k], v) for k, v in first["backbone"].items())
    assert not all(torch.equal(last["backbone"][k], v) for k, v in first["backbone"].items())
    stock = resnet18()
    stock.fc = nn.Identity()
    stock.load_state_dict(first["backbone"], strict=True)
    timings = ["images_per_s", "seconds", "monitor_seconds"]  # wall-clock: never equal twice
    pd.testing.assert_frame_equal(
        pd.read_csv(straight / "byol_metrics.csv").drop(columns=timings),
        pd.read_csv(out / "byol_metrics.csv").drop(columns=timings),
    )


@pytest.mark.slow
def test_fp16_trains_with_loss_scaling_and_resumes_exactly(split_dir, tmp_path):
    # fp16 is for GPUs without bf16; a CPU emulates it slowly, but runs the same code.
    out = split_dir()
    straight = tmp_path / "straight"
    shutil.copytree(out, straight)
    # 8 images: 1 step per epoch (a CPU emulates fp16 slowly), so the stop after epoch 1 is mid-run.
    # 3 epochs: GradScaler's first scales (65,536, then 32,768) may overflow, skipping two steps.
    config = tiny_config(epochs=3, image_size=16, cache_size=20, knn_every=0, max_images=8)
    pretrain(config, straight, RunOptions(device_name="cpu", precision_name="fp16"))
    with pytest.raises(Stopped):
        pretrain(config, out, RunOptions(device_name="cpu", precision_name="fp16", stop_after_epochs=1))
    pretrain(config, out, RunOptions(device_name="cpu", precision_name="fp16", resume=True))
    assert_same_weights(straight, out)
    # The loss scale and its growth counter carry over, as they would not if the scaler restarted.
    scaler_state = load_torch(straight / "byol_checkpoint.pt")["grad_scaler"]
    assert scaler_state["scale"] > 0 and scaler_state["_growth_tracker"] > 0
    assert load_torch(out / "byol_checkpoint.pt")["grad_scaler"] == scaler_state
    assert pd.read_csv(out / "byol_metrics.csv")["loss"].dropna().notna().all()
    assert json.loads((out / "byol_config.json").read_text())["precision"] == "fp16"


@pytest.mark.slow
def test_a_nan_loss_in_fp16_also_suggests_another_precision(split_dir):
    config = tiny_config(epochs=1, image_size=16, cache_size=20, knn_every=0, optimizer="sgd", lr=1e30)
    with pytest.raises(UserError, match="loss became .* Lower --lr, or train in --precision fp32 or bf16"):
        pretrain(config, split_dir(), RunOptions(device_name="cpu", precision_name="fp16"))


def assert_same_weights(dir_a, dir_b):
    """Bit for bit (same process, same CPU): online, predictor and target networks, BatchNorm buffers
    and optimiser state; and training moved every weight far from its initial value, so that equal
    weights are not two runs that barely started.

    At these sizes LARS moves a conv weight by about 1e-6 over a run, below any tolerance a float
    comparison would use; only an exact comparison tells a wrong resume from a right one.
    """
    a, b = load_torch(dir_a / "byol.pt")["backbone"], load_torch(dir_b / "byol.pt")["backbone"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    ckpt_a, ckpt_b = load_torch(dir_a / "byol_checkpoint.pt"), load_torch(dir_b / "byol_checkpoint.pt")
    for name in ckpt_a["model"]:
        assert torch.equal(ckpt_a["model"][name], ckpt_b["model"][name]), name
    moments_a, moments_b = ckpt_a["optimizer"]["state"], ckpt_b["optimizer"]["state"]
    assert moments_a.keys() == moments_b.keys()
    for index in moments_a:
        for key, value in moments_a[index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(moments_b[index][key])), (index, key)
    config = PretrainConfig(**ckpt_a["config"])
    torch.manual_seed(config.seed)
    initial = BYOL(resnet18_backbone(), RESNET18_FEATURES).state_dict()
    for name, value in ckpt_a["model"].items():
        if value.is_floating_point() and value.dim() > 1:  # conv and linear weights, target included
            assert not torch.equal(value, initial[name]), f"{name} never moved"


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_and_resume_is_exact(split_dir, tmp_path, monkeypatch):
    out = split_dir()
    straight = tmp_path / "straight"
    shutil.copytree(out, straight)
    config = tiny_config(max_images=24)  # 3 steps an epoch
    pretrain(config, straight, RunOptions(device_name="cpu"))

    calls = {"n": 0}
    real_step_views = pretrain_module.step_views

    def signal_on_fifth_batch(*args, **kwargs):  # the signal arrives while batch 5 of 6 is training
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step_views(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "step_views", signal_on_fifth_batch)
    with pytest.raises(Stopped) as stopped:
        pretrain(config, out, RunOptions(device_name="cpu"))
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    checkpoint = load_torch(out / "byol_checkpoint.pt")
    assert (checkpoint["state"]["epoch"], checkpoint["state"]["batch_in_epoch"]) == (1, 2)
    before_stop = checkpoint["state"]["epoch_seconds"]  # epoch 2's first 2 batches
    assert before_stop > 0
    monkeypatch.setattr(pretrain_module, "step_views", real_step_views)
    pretrain(config, out, RunOptions(device_name="cpu", resume=True))
    assert_same_weights(straight, out)
    # The resumed epoch's seconds count both processes' parts; its images/s, the resumed batch's.
    row = pd.read_csv(out / "byol_metrics.csv").set_index("epoch").loc[2]
    assert row["seconds"] == pytest.approx(before_stop + 1 * 8 / row["images_per_s"])


@pytest.mark.parametrize("workers", [1, 2])
def test_cache_row_i_is_the_image_of_splits_row_i_across_chunks_and_workers(tmp_path, monkeypatch, workers):
    # Every image its own colour, so a row shifted by one chunk (or decoded out of order) shows.
    folder = tmp_path / "images"
    for index in range(46):
        class_dir = folder / ("Cat" if index % 2 else "Dog")
        class_dir.mkdir(parents=True, exist_ok=True)
        colour = (index * 5 % 256, 255 - index * 3, index * 11 % 256)
        Image.new("RGB", (24 + index % 7, 20), colour).save(class_dir / f"{index:03d}.png")
    out = write_split(folder, tmp_path / "out", 8, 10)
    split = read_split(out)
    monkeypatch.setattr(cache_module, "CHUNK_IMAGES", 5)  # 10 chunks
    build_cache(split, out / CACHE_DIR, 12, workers=workers)
    cache = load_cache(split, out / CACHE_DIR, 12, torch.device("cpu"))
    assert len(cache) == len(split.table) == 46
    for row, path in enumerate(split.table["path"]):
        assert torch.equal(
            cache[row], torch.from_numpy(cache_module.load_square(folder / path, 12).copy())
        ), row


def test_cache_is_built_once_and_rebuilt_when_the_split_changes(split_dir):
    out = split_dir()
    split = read_split(out)
    path = build_cache(split, out / CACHE_DIR, 20)
    images = torch.from_numpy(__import__("numpy").load(path))
    assert images.shape == (len(split.table), 3, 20, 20) and images.dtype == torch.uint8
    modified = path.stat().st_mtime_ns
    build_cache(split, out / CACHE_DIR, 20)
    assert path.stat().st_mtime_ns == modified
    array_path, meta_path = cache_paths(out / CACHE_DIR, 20)
    meta_path.write_text(meta_path.read_text().replace(split.fingerprint, "0" * 64))
    build_cache(split, out / CACHE_DIR, 20)
    assert path.stat().st_mtime_ns != modified
    modified = path.stat().st_mtime_ns
    meta_path.write_text("{damaged")  # an unreadable record means: build it again
    build_cache(split, out / CACHE_DIR, 20)
    assert path.stat().st_mtime_ns != modified


@pytest.mark.slow
def test_resume_from_a_damaged_or_foreign_checkpoint_is_a_clear_error(split_dir):
    out = split_dir()
    pretrain(tiny_config(epochs=1, max_images=8), out, RunOptions(device_name="cpu"))
    checkpoint = out / "byol_checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:5000])  # cut off, as by a full disk or a bad copy
    with pytest.raises(UserError, match="byol_checkpoint.pt is not a readable checkpoint .*--overwrite"):
        pretrain(tiny_config(epochs=2), out, RunOptions(device_name="cpu", resume=True))
    torch.save({"model": {}}, checkpoint)
    with pytest.raises(UserError, match="byol_checkpoint.pt is not a train_byol.py checkpoint"):
        pretrain(tiny_config(epochs=2), out, RunOptions(device_name="cpu", resume=True))


def test_a_cpu_step_that_cannot_fit_in_memory_is_refused_before_the_cache_is_built(split_dir, monkeypatch):
    out = split_dir()
    config = tiny_config()
    needed = byol_step_bytes(config.batch_size, config.image_size, "fp32")
    monkeypatch.setattr(capacity, "available_memory_bytes", lambda: int(needed) - 1)
    with pytest.raises(
        UserError,
        match=rf"--batch-size 8 at --image-size 32 \(fp32\) needs about {readable_size(needed)} of memory",
    ):
        pretrain(config, out, RunOptions(device_name="cpu", precision_name="fp32"))
    assert not (out / "cache").exists() and not (out / "byol_checkpoint.pt").exists()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun: every process of this machine needs its own
    monkeypatch.setattr(capacity, "available_memory_bytes", lambda: int(2 * needed) - 1)
    with pytest.raises(UserError, match="fp32, 2 processes"):
        capacity.check_cpu_memory(config.batch_size, config.image_size, "fp32")
    monkeypatch.setattr(capacity, "available_memory_bytes", lambda: None)  # not Linux: no check
    capacity.check_cpu_memory(10**6, 10**4, "fp32")


def test_a_cache_the_disk_cannot_hold_is_refused_before_a_byte_is_written(split_dir, monkeypatch):
    out = split_dir()
    split = read_split(out)
    needed = len(split.table) * 3 * 20 * 20
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**30, 2**30, needed - 1))
    with pytest.raises(
        UserError, match=rf"image cache .*images_20.npy needs {readable_size(needed)} and its disk has"
    ):
        build_cache(split, out / CACHE_DIR, 20)
    assert not any((out / "cache").iterdir())
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**30, 2**30, needed))
    assert build_cache(split, out / CACHE_DIR, 20).is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "64", "--max-images", "16"], "--batch-size 64 is larger than the 16"),
        (["--image-size", "48", "--cache-size", "40"], "larger than --cache-size 40"),
        (["--device", "cuda:7"], "--device cuda:7"),
        (["--device", "tpu"], "--device"),
        (["--resume"], "no checkpoint"),
        (["--blur-sigma-min", "2", "--blur-sigma-max", "1"], "--blur-sigma-min 2.0"),
        (["--lars-trust", "0"], "--lars-trust: must be above 0"),
        (
            ["--optimizer", "sgd", "--lars-trust", "0.02"],
            "--lars-trust applies to --optimizer lars only, not sgd",
        ),
        (["--lr", "nan"], "--lr: must be a finite number"),
        (["--weight-decay", "-0.0001"], "--weight-decay: must be a finite number >= 0"),
        (["--warmup-fraction", "1"], "--warmup-fraction 1.0: must be in [0, 1)"),
        (["--batch-size", "1"], "--batch-size: must be 2 or more"),
        (["--image-size", "7", "--cache-size", "8"], "--image-size 7: must be 8 px or more"),
        (["--seed", "99999999999999"], "--seed 99999999999999: use an integer from 0 to 4294967295"),
        (["--snapshots", "2"], "--snapshots '2': use log2"),
        (["--compile", "yes"], "--compile: invalid choice: 'yes'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(split_dir, args, message):
    out = split_dir()
    result = run_script("train_byol.py", "--out-dir", out, "--epochs", "1", *TINY_BYOL[:8], *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert_one_error_line(result.stderr)
    assert not (out / "byol.pt").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lars_trust": 0.0}, "--lars-trust 0.0"),
        ({"lars_trust": float("nan")}, "--lars-trust nan"),
        ({"warmup_fraction": 1.0}, "--warmup-fraction 1.0"),
        ({"blur_sigma_min": float("nan")}, "--blur-sigma-min nan"),
        ({"batch_size": 1}, "--batch-size 1: must be 2 or more"),
        ({"optimizer": "adamw", "lars_trust": 0.02}, "--lars-trust applies to --optimizer lars only"),
        ({"image_size": 4}, "--image-size 4: must be 8 px or more"),
        ({"seed": -1}, "--seed -1: use an integer"),
    ],
)
def test_library_config_checks_what_the_cli_checks(overrides, message):
    # PretrainConfig used directly (no argparse types in front of it) still refuses these values.
    with pytest.raises(UserError, match=message):
        tiny_config(**overrides).resolved()


def test_missing_or_stale_split_is_a_clear_error(split_dir, tmp_path):
    result = run_script("train_byol.py", "--out-dir", tmp_path / "empty", "--epochs", "1")
    assert result.returncode == 2 and "data_split.py" in result.stderr
    out = split_dir()
    (out / "splits.csv").write_text((out / "splits.csv").read_text() + "\n")
    result = run_script("train_byol.py", "--out-dir", out, "--epochs", "1", *TINY_BYOL)
    assert result.returncode == 2 and "re-run data_split.py" in result.stderr


@pytest.mark.slow
def test_an_earlier_run_needs_resume_or_overwrite_and_a_nan_loss_keeps_its_files(split_dir):
    out = split_dir()
    assert run_script("train_byol.py", "--out-dir", out, "--epochs", "1", *TINY_BYOL).returncode == 0
    kept = ("byol.pt", "byol_checkpoint.pt", "byol_metrics.csv", "byol_config.json")
    before = {name: (out / name).read_bytes() for name in kept}
    # A forgotten --resume must not start a new run over the earlier one's checkpoint.
    refused = run_script("train_byol.py", "--out-dir", out, "--epochs", "3", *TINY_BYOL)
    assert refused.returncode == 2 and "--resume" in refused.stderr and "--overwrite" in refused.stderr
    assert "Traceback" not in refused.stderr
    both = run_script("train_byol.py", "--out-dir", out, "--epochs", "1", "--resume", "--overwrite")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    assert {name: (out / name).read_bytes() for name in kept} == before
    result = run_script(
        "train_byol.py",
        "--out-dir",
        out,
        "--epochs",
        "1",
        "--optimizer",
        "sgd",
        "--lr",
        "1e30",
        "--overwrite",
        *TINY_BYOL,
    )
    assert result.returncode == 2, result.stderr
    assert "loss became" in result.stderr and "Traceback" not in result.stderr
    # Weights, checkpoint and metrics of the last good run survive a run that diverges.
    assert {name: (out / name).read_bytes() for name in kept[:3]} == {name: before[name] for name in kept[:3]}


@pytest.mark.parametrize("max_images", [0, 20])
def test_pretraining_never_sees_a_test_image(split_dir, max_images):
    split = read_split(split_dir(per_class=24, n_labelled=8, n_test=16))
    rows = pretraining_indices(split, max_images, seed=0)
    assert not set(rows) & set(split.indices("test"))
    assert len(rows) == (max_images or len(split.indices("labelled", "unlabelled")))
    assert set(rows) <= set(split.indices("labelled", "unlabelled"))


@pytest.mark.parametrize(
    "spec, epochs, expected",
    [
        ("", 100, set()),
        ("log2", 100, {1, 2, 4, 8, 16, 32, 64, 100}),
        ("log2", 64, {1, 2, 4, 8, 16, 32, 64}),
        ("log2", 1, {1}),
        ("3, 7,7", 10, {3, 7}),
    ],
)
def test_snapshot_epochs(spec, epochs, expected):
    assert pretrain_module.parse_snapshot_epochs(spec, epochs) == expected


@pytest.mark.parametrize("spec", ["0", "11", "two", "log", ","])
def test_bad_snapshot_epochs_name_the_flag(spec):
    with pytest.raises(UserError, match=r"--snapshots .*log2 .*--epochs 10"):
        pretrain_module.parse_snapshot_epochs(spec, 10)


def test_compile_auto_is_on_for_long_cuda_runs_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not pretrain_module.use_compile("auto", cpu, 10**6)
    # On CUDA, only where the compile is paid back: a long run, or a long run's long remainder.
    pays = pretrain_config.COMPILE_PAYS_AFTER_STEPS
    assert pretrain_module.use_compile("auto", cuda, pays) and pretrain_module.use_compile(
        "auto", cuda, 30_186
    )
    assert not pretrain_module.use_compile("auto", cuda, pays - 1) and not pretrain_module.use_compile(
        "auto", cuda, 0
    )
    assert pretrain_module.use_compile("on", cpu, 1) and not pretrain_module.use_compile("off", cuda, 10**6)
    with pytest.raises(UserError, match="--compile 'yes'"):
        pretrain(tiny_config(), "unused", RunOptions(compile_mode="yes"))


@pytest.mark.slow
def test_compile_wraps_the_training_step_and_keeps_plain_weights(split_dir, monkeypatch):
    compiled = []

    def fake_compile(module):  # records what train_byol.py --compile on hands to torch.compile
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    out = split_dir()
    model = pretrain(
        tiny_config(epochs=1, max_images=8), out, RunOptions(device_name="cpu", compile_mode="on")
    )
    assert compiled == [model]  # the whole BYOL forward (both views, both networks), once
    weights = load_torch(out / "byol.pt")["backbone"]
    assert not any(name.startswith("_orig_mod") for name in weights)


@pytest.mark.slow
def test_resume_with_a_changed_flag_or_another_process_count_is_refused(split_dir):
    out = split_dir()
    args = ["--out-dir", out, "--epochs", "2", *TINY_BYOL]
    paused = run_script("train_byol.py", *args, "--stop-after-epochs", "1")
    assert paused.returncode == 0, paused.stderr
    checkpoint_bytes = (out / "byol_checkpoint.pt").read_bytes()
    changed = run_script("train_byol.py", *args, "--resume", "--tau-base", "0.9")
    assert changed.returncode == 2 and "trained with --tau-base 0.996, this run has 0.9" in changed.stderr
    assert_one_error_line(changed.stderr)
    assert (out / "byol_checkpoint.pt").read_bytes() == checkpoint_bytes and not (out / "byol.pt").exists()
    # The checkpoint of a two-process run, resumed by one process.
    checkpoint = load_torch(out / "byol_checkpoint.pt")
    checkpoint["world_size"] = 2
    torch.save(checkpoint, out / "byol_checkpoint.pt")
    with pytest.raises(
        UserError, match=r"trained with the number of processes 2, this run has 1; resume with the same"
    ):
        pretrain(tiny_config(), out, RunOptions(device_name="cpu", resume=True))
    assert not (out / "byol.pt").exists()


@pytest.mark.slow
def test_a_checkpoint_is_written_mid_epoch_every_checkpoint_interval(split_dir, monkeypatch):
    saved = []
    real_save = pretrain_module.save_checkpoint

    def recording_save(run, state):
        saved.append((state.epoch, state.batch_in_epoch, state.generator_state is not None))
        real_save(run, state)

    monkeypatch.setattr(pretrain_module, "CHECKPOINT_EVERY_S", -1.0)  # every step is past the interval
    monkeypatch.setattr(pretrain_module, "save_checkpoint", recording_save)
    pretrain(tiny_config(epochs=1, knn_every=0), split_dir(), RunOptions(device_name="cpu"))
    # Mid-epoch saves carry the augmentation generator (for an exact resume); the epoch's end does not.
    assert saved == [(0, 1, True), (0, 2, True), (0, 3, True), (0, 4, True), (1, 0, False)]


def test_progressive_sizes_share_the_steps_equally_and_end_at_the_image_size():
    from byol.pretrain_config import view_size_at

    config = tiny_config(image_size=64, cache_size=74, progressive_sizes=[32, 48])
    assert [view_size_at(config, step, 9) for step in range(9)] == [32] * 3 + [48] * 3 + [64] * 3
    assert view_size_at(config, 9, 10) == 64 and view_size_at(config, 0, 10) == 32
    assert {view_size_at(tiny_config(image_size=64), step, 9) for step in range(9)} == {64}
    assert config.resolved().progressive_sizes == [32, 48]
    for sizes in ([48, 32], [32, 64], [4, 32], [32, 32]):
        with pytest.raises(UserError, match="--progressive-sizes .*rising sizes .* below --image-size 64"):
            tiny_config(image_size=64, cache_size=74, progressive_sizes=sizes).resolved()


@pytest.mark.slow
def test_progressive_sizes_train_smaller_views_first_and_resume_exactly(split_dir, tmp_path, monkeypatch):
    from byol import pretrain as pretrain_module

    out = split_dir()
    straight = tmp_path / "straight"
    shutil.copytree(out, straight)
    seen = []
    real_step_views = pretrain_module.step_views

    def recording(images, rows, views, generator, runtime):
        view_1, view_2 = real_step_views(images, rows, views, generator, runtime)
        seen.append(view_1.shape[-1])
        return view_1, view_2

    monkeypatch.setattr(pretrain_module, "step_views", recording)
    # 2 steps an epoch, 4 in all: 24, 24, 32, 32. (Not 16 px: on this project's CPU a resnet18 step on
    # 16 px views, whose last stages see 1x1 maps, is not bit-reproducible even in one thread.)
    config = tiny_config(max_images=16, progressive_sizes=[24])
    pretrain(config, straight, RunOptions(device_name="cpu"))
    assert seen == [24, 24, 32, 32]
    recorded = json.loads((straight / "byol_config.json").read_text())
    assert recorded["progressive_sizes"] == [24] and recorded["image_size"] == 32
    with pytest.raises(Stopped):
        pretrain(config, out, RunOptions(device_name="cpu", stop_after_epochs=1))
    pretrain(PretrainConfig(), out, RunOptions(device_name="cpu", resume=True))
    assert seen[4:] == [24, 24, 32, 32]  # paused after epoch 1, resumed: the views grew at the same step
    assert_same_weights(straight, out)
