"""The files a pretraining leaves: the checkpoint (the training state beside the model, optimiser and
scaler, written by the first process, read back and checked on --resume, and restored exactly) and
byol.pt (the backbone, loadable into a stock resnet18, with a summary of the run)."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from byol.distributed import Ranks
from byol.errors import UserError
from byol.files import load_torch, save_torch
from byol.model import RESNET18_FEATURES
from byol.resume import check_resumable

if TYPE_CHECKING:
    from byol.pretrain import Run

log = logging.getLogger(__name__)


CHECKPOINT_FILE = "byol_checkpoint.pt"


CHECKPOINT_KEYS = {"model", "optimizer", "grad_scaler", "config", "world_size", "state"}  # TrainState


@dataclass
class TrainState:
    """Where a run stands. With the model's, optimiser's and loss scaler's states it is the checkpoint."""

    epoch: int = 0  # epochs finished
    batch_in_epoch: int = 0  # the next batch of epoch `epoch`
    step: int = 0  # optimiser steps taken
    metrics: list[dict] = field(default_factory=list)  # byol_metrics.csv's rows so far
    loss_sum: float = 0.0  # over the batches of the current epoch so far
    generator_state: torch.Tensor | None = None  # the augmentations' generator mid-epoch; None at its start
    epoch_seconds: float = 0.0  # seconds the current epoch took before the last resume


def read_checkpoint(path: Path, ranks: Ranks) -> dict:
    if not path.is_file():
        raise UserError(f"--resume: no checkpoint {path}; run without --resume to start")
    checkpoint = load_torch(path, "start over with --overwrite")
    if not isinstance(checkpoint, dict) or not CHECKPOINT_KEYS <= checkpoint.keys():
        raise UserError(f"{path} is not a train_byol.py checkpoint; start over with --overwrite")
    remedy = "resume with the same number, or start over with --overwrite"
    check_resumable(path, {"world_size": checkpoint["world_size"]}, {"world_size": ranks.world_size}, remedy)
    return checkpoint


def restore(run: Run, checkpoint: dict) -> TrainState:
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    if run.scaler.is_enabled():  # its state is empty unless the run trains in fp16
        run.scaler.load_state_dict(checkpoint["grad_scaler"])
    state = TrainState(**checkpoint["state"])
    log.info(f"resuming at epoch {state.epoch + 1}, batch {state.batch_in_epoch} of {run.steps_per_epoch}")
    return state


def save_checkpoint(run: Run, state: TrainState) -> None:
    if not run.ranks.is_main:  # every rank holds the same state; one copy is enough
        return
    save_torch(
        run.checkpoint_path,
        {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "grad_scaler": run.scaler.state_dict(),
            "config": asdict(run.config),
            "world_size": run.ranks.world_size,
            "splits_sha256": run.splits_sha256,  # not in CHECKPOINT_KEYS: older checkpoints lack it
            "state": asdict(state),
        },
    )


def check_same_split(path: Path, checkpoint: dict, splits_sha256: str) -> None:
    """--resume trains on the split the checkpoint (`path`) was trained on, by its fingerprint; a
    checkpoint written before the fingerprint was saved is not checked. A split made again from other
    files, or another --split, would change the images under a half-trained run."""
    saved = checkpoint.get("splits_sha256")
    if saved is not None and saved != splits_sha256:
        raise UserError(
            f"--resume: {path} was trained on another split (splits.csv fingerprint {saved[:12]}, this one "
            f"is {splits_sha256[:12]}); resume with the split it was trained on (--split), or start over "
            "with --overwrite"
        )


def save_weights(run: Run, state: TrainState, path: Path) -> Path:
    """The backbone in byol.pt's format: it loads into a stock resnet18 with fc = nn.Identity()."""
    save_torch(
        path,
        {
            "backbone": run.model.backbone.state_dict(),
            "arch": "resnet18",
            "feature_dim": RESNET18_FEATURES,
            "config": asdict(run.config),
            # Stage 3 refuses a split that holds other images out: its test images may be in this pool
            "held_out_sha256": run.held_out_sha256,
            "metrics": summarize_pretraining(state.metrics),
            "epoch": state.epoch,
            "step": state.step,
        },
    )
    return path


def summarize_pretraining(metrics: list[dict]) -> dict:
    knn = [row["val_knn_labelled"] for row in metrics if not math.isnan(row["val_knn_labelled"])]
    trained = [row for row in metrics if row["epoch"] > 0]
    return {
        "epochs": trained[-1]["epoch"] if trained else 0,
        "final_loss": trained[-1]["loss"] if trained else math.nan,
        "val_knn_labelled_initial": knn[0] if knn else math.nan,
        "val_knn_labelled_best": max(knn) if knn else math.nan,
        "val_knn_labelled_final": knn[-1] if knn else math.nan,
        "images_per_s": sum(r["images_per_s"] for r in trained) / len(trained) if trained else math.nan,
        "seconds": sum(r["seconds"] for r in trained),
    }
