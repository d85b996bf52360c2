"""One BYOL training step, from cached uint8 images to an updated model.

`train_byol.py` and `benchmarks/bench_byol.py` both call these, so the benchmark measures exactly
the code that trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from byol.augment import BYOLViews
from byol.device import autocast
from byol.distributed import Runtime
from byol.model import BYOL
from byol.optim import set_learning_rates


def seeded_generator(seed: int, epoch: int, device: torch.device | str) -> torch.Generator:
    """The augmentation/shuffle generator of one epoch: the same on every rank and on every resume."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


def step_views(
    images: torch.Tensor,
    global_rows: torch.Tensor,
    views: BYOLViews,
    generator: torch.Generator,
    runtime: Runtime,
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's two views of its slice of the global batch `global_rows` of the cache `images`."""
    start, stop = runtime.ranks.shard_bounds(len(global_rows))
    batch = images[global_rows[start:stop]].to(runtime.device, non_blocking=True)  # (B, 3, S, S) uint8
    view_1, view_2 = views(batch, generator, global_batch=len(global_rows), offset=start)
    fmt = runtime.memory_format
    return view_1.contiguous(memory_format=fmt), view_2.contiguous(memory_format=fmt)


@dataclass
class Trainer:
    """What a BYOL step updates, and where. `train_model` is `model` itself, or its
    DistributedDataParallel (and/or torch.compile) wrapper, which averages the gradients across ranks
    during backward. `scaler` (byol.device.grad_scaler) scales the loss in fp16 and skips the step
    when the gradients overflowed; in fp32 and bf16 it does nothing."""

    train_model: nn.Module
    model: BYOL
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    runtime: Runtime


def train_step(
    trainer: Trainer, view_1: torch.Tensor, view_2: torch.Tensor, lr: float, tau: float
) -> torch.Tensor:
    """Loss, backward, optimiser step at `lr`, EMA of the target at `tau`; returns the detached loss."""
    set_learning_rates(trainer.optimizer, lr)
    with autocast(trainer.runtime.device, trainer.runtime.precision):
        loss = trainer.train_model(view_1, view_2)
    backward_step(trainer.optimizer, trainer.scaler, loss)
    trainer.model.update_target(tau)
    return loss.detach()


def backward_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor) -> None:
    """Zero the gradients, backpropagate the loss (scaled in fp16), step and update the loss scale.

    `scaler.step` unscales the gradients first, so LARS's trust ratios see the true ones, and skips
    the step when they overflowed; in fp32 and bf16 the scaler does nothing. Both stages step here.
    """
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
