"""Data-parallel training across the processes `torchrun` starts: one rank per GPU, or per CPU process.

Every rank holds the whole model; each step, each rank takes its own disjoint slice of the global
batch (per-rank batch x world size), and DistributedDataParallel averages the gradients, so every
rank applies the same update and the weights stay identical. Only rank 0 writes files.
A plain `python train_byol.py` is a world of one and none of this costs anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from byol.device import MEMORY_FORMAT, resolve_device
from byol.errors import UserError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard_bounds(self, n: int) -> tuple[int, int]:
        """Start and stop of this rank's slice of n rows: contiguous, disjoint, together covering all."""
        base, remainder = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, remainder)
        return start, start + base + (self.rank < remainder)

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        start, stop = self.shard_bounds(len(rows))
        return rows[start:stop]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor


SINGLE_PROCESS = Ranks()


@dataclass(frozen=True)
class Runtime:
    """Where and how a stage computes: the device, the autocast precision (byol.device.resolve_precision),
    this process's place among the torchrun processes, and the images' memory format."""

    device: torch.device
    precision: str = "fp32"
    ranks: Ranks = SINGLE_PROCESS
    memory_format: torch.memory_format = MEMORY_FORMAT


@contextlib.contextmanager
def process_group(device_name: str) -> Iterator[tuple[Ranks, torch.device]]:
    """Join the torchrun job (WORLD_SIZE > 1), or run alone; yields this rank and its device.

    NCCL on CUDA (each rank on GPU LOCAL_RANK), gloo on CPU. A group the caller already started
    is used as it is and left running.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world_size == 1 and not dist.is_initialized():
        yield SINGLE_PROCESS, device
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"rank with LOCAL_RANK {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                "start at most one process per GPU (torchrun --nproc-per-node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    started_here = not dist.is_initialized()
    if started_here:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    ranks = Ranks(dist.get_rank(), dist.get_world_size(), local_rank)
    if not ranks.is_main:  # one voice: the other ranks only report warnings and errors
        logging.getLogger().setLevel(logging.WARNING)
    try:
        yield ranks, device
    finally:
        if started_here:
            dist.destroy_process_group()


def wrap(model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """The module to call for training steps: DistributedDataParallel across ranks, else `model`."""
    if not ranks.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) whose gradient is also summed over ranks (each rank's loss uses the total)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.clone()
        dist.all_reduce(grad)
        return grad


def average_buffers(model: nn.Module, ranks: Ranks) -> None:
    """Average BatchNorm running statistics over ranks, so every rank ends an epoch with the same model.

    Without --sync-bn each rank's statistics follow its own images (DDP re-broadcasts rank 0's only at
    the next forward); averaged, they describe the whole global batch.
    """
    if not ranks.distributed:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(ranks.world_size)


class CrossRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, on any device.

    PyTorch's SyncBatchNorm runs only on GPUs; this is the same computation (sum and sum of squares
    all-reduced, with gradients flowing back through the all-reduce) for gloo on CPU. The state
    dict keys are BatchNorm's, so the weights still load into a stock torchvision model.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(input)
        channels = input.shape[1]
        reduce_dims = [0, *range(2, input.dim())]
        values = input.float()
        count = torch.full((1,), values.numel() / channels, device=input.device)
        totals = _SumOverRanks.apply(
            torch.cat([values.sum(reduce_dims), (values * values).sum(reduce_dims), count])
        )
        n = totals[-1]
        mean = totals[:channels] / n
        variance = totals[channels : 2 * channels] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked.item()
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(variance.detach() * n / (n - 1), momentum)
        shape = [1, channels] + [1] * (input.dim() - 2)
        output = (values - mean.view(shape)) * torch.rsqrt(variance.view(shape) + self.eps)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output.to(input.dtype)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm use global-batch statistics (SyncBatchNorm on CUDA, else CrossRankBatchNorm)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            replacement = CrossRankBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            replacement.load_state_dict(child.state_dict())
            replacement.train(child.training)
            if child.affine:
                replacement.weight.requires_grad_(child.weight.requires_grad)
                replacement.bias.requires_grad_(child.bias.requires_grad)
            setattr(model, name, replacement.to(child.weight.device if child.affine else device))
        else:
            sync_batchnorm(child, device)
    return model
