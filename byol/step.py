"""One BYOL training step, from cached uint8 images to an updated model.

`train_byol.py` and `benchmarks/bench_byol.py` both call these, so the benchmark measures exactly
the code that trains.
"""

from __future__ import annotations

import torch
from torch import nn

from byol.augment import BYOLViews
from byol.device import autocast
from byol.distributed import Ranks
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
    ranks: Ranks,
    device: torch.device,
    fmt: torch.memory_format,
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's two views of its slice of the global batch `global_rows` of the cache `images`."""
    start, stop = ranks.shard_bounds(len(global_rows))
    batch = images[global_rows[start:stop]].to(device, non_blocking=True)  # (B, 3, S, S) uint8
    view_1, view_2 = views(batch, generator, global_batch=len(global_rows), offset=start)
    return view_1.contiguous(memory_format=fmt), view_2.contiguous(memory_format=fmt)


def train_step(
    train_model: nn.Module,
    model: BYOL,
    optimizer: torch.optim.Optimizer,
    view_1: torch.Tensor,
    view_2: torch.Tensor,
    lr: float,
    tau: float,
    device: torch.device,
    precision: str,
    scaler: torch.amp.GradScaler,
) -> torch.Tensor:
    """Loss, backward, optimiser step at `lr`, EMA of the target at `tau`; returns the detached loss.

    `train_model` is `model` itself, or its DistributedDataParallel wrapper (which averages the
    gradients across ranks during backward). `scaler` (byol.device.grad_scaler) scales the loss in
    fp16 and skips the step when the gradients overflowed; in fp32 and bf16 it does nothing.
    """
    set_learning_rates(optimizer, lr)
    with autocast(device, precision):
        loss = train_model(view_1, view_2)
    backward_step(optimizer, scaler, loss)
    model.update_target(tau)
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
