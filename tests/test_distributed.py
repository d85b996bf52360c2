"""Data-parallel BYOL (byol/distributed.py): 2 CPU processes with gloo, against one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_script

from byol.augment import BYOLViews
from byol.distributed import Ranks
from byol.files import load_torch
from byol.model import resnet18_backbone
from byol.optim import default_lr
from byol.pretrain import PretrainConfig, RunOptions, pretrain

WORKER = Path(__file__).with_name("ddp_worker.py")
# 32 images, 2 epochs of 2 steps; 2 processes x 8 images = a global batch of 16. LARS at lr 1 and
# eta 0.02 moves every weight tensor by about 2 % of its norm per step, so that the comparisons below
# compare updates far larger than float rounding (the default rate moves them by ~1e-6 in 4 steps).
PER_RANK = {
    "epochs": 2,
    "batch_size": 8,
    "image_size": 32,
    "cache_size": 36,
    "max_images": 32,
    "lr": 1.0,
    "lars_trust": 0.02,
    "knn_every": 0,  # the monitor at the start and the end only: nothing here reads epoch 1's
}


def relative_update_gap(state: dict, reference: dict, initial: dict) -> float:
    """Largest over the backbone's weight tensors of |(w - w0) - (w_ref - w0)| / |w_ref - w0|."""
    gaps = []
    for key, start in initial.items():
        if start.dim() > 1:  # conv and linear weights
            step = reference[key] - start
            assert step.norm() > 1e-3 * start.norm(), f"{key} barely moved: the comparison would be vacuous"
            gaps.append(((state[key] - start) - step).norm() / step.norm())
    return max(gaps).item()


def torchrun(
    out_dir: Path, config: dict, resume: bool = False, stop_after_epochs: int = 0, signal_at: int = 0
) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += [str(WORKER), str(out_dir), json.dumps(config), str(int(resume)), str(stop_after_epochs)]
    command += [str(signal_at)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def rank_models(out_dir: Path) -> list[dict]:
    return [torch.load(out_dir / f"rank{rank}_model.pt") for rank in (0, 1)]


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_shards_are_disjoint_and_cover_the_batch(world_size):
    rows = torch.arange(17)
    shards = [Ranks(rank, world_size).shard(rows) for rank in range(world_size)]
    assert torch.equal(torch.cat(shards), rows)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_sharded_views_equal_the_whole_batch_views():
    images = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8)
    views = BYOLViews(16)
    whole = views(images, torch.Generator().manual_seed(3))
    parts = [
        views(images[start:stop], torch.Generator().manual_seed(3), global_batch=6, offset=start)
        for start, stop in (Ranks(0, 2).shard_bounds(6), Ranks(1, 2).shard_bounds(6))
    ]
    for index in (0, 1):
        torch.testing.assert_close(torch.cat([part[index] for part in parts]), whole[index])


@pytest.mark.slow
def test_cross_rank_batchnorm_in_two_processes_matches_batchnorm_on_the_whole_batch(tmp_path):
    """Two gloo processes, each with half of a batch whose halves differ: outputs, the gradients of
    the inputs and of the weights, and the running statistics equal one BatchNorm on all 8 images."""
    import syncbn_worker

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen([sys.executable, syncbn_worker.__file__, str(rank), str(tmp_path)], env=env)
        for rank in (0, 1)
    ]
    assert [worker.wait(timeout=300) for worker in workers] == [0, 0]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    reference = syncbn_worker.reference_model()
    inputs = syncbn_worker.batch().requires_grad_(True)
    outputs = reference(inputs)
    outputs.square().sum().backward()
    torch.testing.assert_close(
        torch.cat([r["outputs"] for r in ranks]), outputs.detach(), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(torch.cat([r["input_grad"] for r in ranks]), inputs.grad, atol=1e-4, rtol=1e-4)
    for rank in ranks:
        for (name, param), grad in zip(reference.named_parameters(), rank["param_grads"]):
            torch.testing.assert_close(grad, param.grad, atol=1e-4, rtol=1e-4, msg=name)
        assert set(rank["buffers"]) == {name for name, _ in reference.named_buffers()}
        for name, buffer in reference.named_buffers():
            torch.testing.assert_close(rank["buffers"][name], buffer, atol=1e-5, rtol=1e-4, msg=name)
    # Per-half statistics (no all-reduce) would be far off: the halves differ in mean and spread.
    halves = torch.cat([syncbn_worker.reference_model()(half) for half in syncbn_worker.batch().split(4)])
    assert (halves - outputs).abs().max() > 0.1


@pytest.mark.longest
@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(split_dir, tmp_path):
    out = split_dir(per_class=24, n_validation=0)  # the images its tolerances were measured on
    runs = {name: tmp_path / name for name in ("single", "synced", "resumed")}
    for path in runs.values():
        shutil.copytree(out, path)

    pretrain(
        PretrainConfig(**{**PER_RANK, "batch_size": 16}),
        runs["single"],
        RunOptions(device_name="cpu", precision_name="fp32", snapshot_epochs="1"),
    )  # fp32 here and in the workers: they must agree to float32 rounding
    synced = {**PER_RANK, "sync_bn": True}
    torchrun(runs["synced"], synced)
    # SIGTERM to rank 1 alone while it prepares its 3rd step (epoch 2, batch 1): both stop after it.
    torchrun(runs["resumed"], synced, signal_at=3)
    assert not (runs["resumed"] / "byol.pt").exists()
    stopped = [json.loads((runs["resumed"] / f"rank{rank}_stopped.json").read_text()) for rank in (0, 1)]
    checkpoint_path = runs["resumed"] / "byol_checkpoint.pt"
    assert stopped[0] == [
        f"stopped by a signal to another process; checkpoint saved in {checkpoint_path}, "
        "continue with --resume",
        143,
    ]
    assert stopped[1][0].startswith("stopped by SIGTERM") and stopped[1][1] == 143
    state = load_torch(runs["resumed"] / "byol_checkpoint.pt")["state"]
    assert (state["epoch"], state["batch_in_epoch"], state["step"]) == (1, 1, 3)
    torchrun(runs["resumed"], synced, resume=True)

    # Each rank trains on its own half of every global batch, and the halves cover it.
    batches = [json.loads((runs["synced"] / f"rank{rank}_rows.json").read_text()) for rank in (0, 1)]
    assert len(batches[0]) == len(batches[1]) == 4  # 2 epochs x 32 images / 16 per step
    for mine_0, mine_1 in zip(batches[0], batches[1]):
        assert mine_0["global"] == mine_1["global"] and len(mine_0["global"]) == 16
        assert not set(mine_0["mine"]) & set(mine_1["mine"])
        assert sorted(mine_0["mine"] + mine_1["mine"]) == sorted(mine_0["global"])

    # DDP's averaged gradients keep the online network, and so the EMA target, identical everywhere.
    for name in ("synced", "resumed"):
        rank_0, rank_1 = rank_models(runs[name])
        for key in rank_0:
            assert torch.equal(rank_0[key], rank_1[key]), f"{name}: {key} differs across ranks"
    # One set of files, written by rank 0.
    assert sorted(p.name for p in runs["synced"].glob("byol*")) == [
        "byol.pt",
        "byol_checkpoint.pt",
        "byol_config.json",
        "byol_metrics.csv",
        "byol_views.png",
    ]
    assert json.loads((runs["synced"] / "byol_config.json").read_text())["global_batch_size"] == 16

    # With --sync-bn the two processes compute what one process does with the same 16 images per step
    # (same rows, same per-image views); only the order of floating-point sums differs. Compared as
    # updates, w - w0, relative to their size: a raw weight comparison at any tolerance above the
    # update's size would pass for a run that never trained. (That without --sync-bn each process
    # normalises by its own half is the two-process BatchNorm test's; a third torchrun here measured
    # 1.45 of the update and a loss 6e-3 away.)
    def first_epoch(name):  # after 2 steps: the backbone snapshot and the mean loss of those steps
        weights = load_torch(runs[name] / "snapshots" / "byol_epoch0001.pt")["backbone"]
        return weights, pd.read_csv(runs[name] / "byol_metrics.csv")["loss"].iloc[1]

    torch.manual_seed(0)
    initial = resnet18_backbone().state_dict()
    (one, loss_one), (two, loss_two) = map(first_epoch, ("single", "synced"))
    # Measured: 0.032 of the update (one process run with 1 thread against 2 gives 0.033: float
    # rounding, grown over two steps at this high rate) and a loss within 2e-6.
    gap = relative_update_gap(two, one, initial)
    assert gap < 0.1, gap
    assert abs(loss_two - loss_one) < 1e-5 * loss_one

    # Resume under DDP continues exactly where the straight run went: bit for bit.
    resumed = load_torch(runs["resumed"] / "byol_checkpoint.pt")["model"]
    straight = load_torch(runs["synced"] / "byol_checkpoint.pt")["model"]
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key
    # The default learning rate follows the global batch, not the per-process one.
    assert PretrainConfig(batch_size=8).resolved(world_size=2).lr == default_lr("lars", 16)
    assert json.loads((runs["resumed"] / "byol_config.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_two_process_finetuning_matches_one_process(split_dir, tmp_path):
    out = split_dir(n_labelled=16)
    single, spread = tmp_path / "single", tmp_path / "spread"
    shutil.copytree(out, single)
    shutil.copytree(out, spread)
    # One epoch of 2 steps: AdamW's first updates are about +-lr whatever the gradient's size, so over
    # more steps float rounding in near-zero gradients grows into visible (~0.5 %) loss differences.
    common = ["--inits", "random", "--seeds", "1", "--epochs", "1", "--image-size", "32", "--device", "cpu"]
    common += ["--precision", "fp32"]  # float32 rounding is the tolerance; bf16 would round far more
    common += ["--finetune-lrs", "1e-3"]  # one rate: the comparison is of the training, not of a choice
    result = run_script("train_classifier.py", "--out-dir", single, "--batch-size", "8", *common)
    assert result.returncode == 0, result.stderr[-2000:]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    result = subprocess.run(
        [
            *command,
            "train_classifier.py",
            "--out-dir",
            str(spread),
            "--batch-size",
            "4",
            "--sync-bn",
            *common,
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("test_acc") == 2  # one summary table (finetune, frozen), from rank 0
    one = pd.read_csv(single / "classifier_metrics.csv")
    two = pd.read_csv(spread / "classifier_metrics.csv")
    assert one[["mode", "epoch"]].equals(two[["mode", "epoch"]])
    # Same rows, same views, global-batch BatchNorm: equal up to float rounding. Measured on three image
    # sets (relative to one process): rounding moved the train loss by <= 5e-5 and, after AdamW's
    # sign-like first step (+-lr on every weight, so a rounding-sized gradient can flip a sign), the
    # test loss by <= 3e-3. Real mistakes moved them by far more: BatchNorm over the rank's half batch
    # (no --sync-bn) by >= 4e-2 / 1.8e-2, gradients not averaged over ranks by >= 6.5e-2 / 1.8e-1.
    for column, rtol in [("train_loss", 1e-3), ("test_loss", 1e-2)]:
        assert np.allclose(one[column], two[column], rtol=rtol, atol=0), (column, one[column], two[column])
    for column in ["train_acc", "test_acc"]:  # a near-tie may fall either way: one image at most
        assert (one[column] - two[column]).abs().max() <= 1 / 16 + 1e-9, (column, one[column], two[column])
