"""Run by test_distributed.py in 2 spawned processes: CrossRankBatchNorm on this rank's half of a batch."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from byol.distributed import sync_batchnorm


def reference_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.BatchNorm1d(144)
    )


def batch() -> torch.Tensor:
    """8 images; rank r takes rows 4r..4r+3. Shifted and scaled so that each half's statistics differ."""
    inputs = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    inputs[4:] = inputs[4:] * 3 + 2
    return inputs


def run(rank: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=2)
    try:
        model = sync_batchnorm(reference_model(), torch.device("cpu"))
        inputs = batch()[4 * rank : 4 * rank + 4].clone().requires_grad_(True)
        outputs = model(inputs)
        outputs.square().sum().backward()  # this rank's part of the loss over the whole batch
        for param in model.parameters():  # what DDP does: the gradient of the summed loss
            dist.all_reduce(param.grad)
        torch.save(
            {
                "outputs": outputs.detach(),
                "input_grad": inputs.grad,
                "param_grads": [param.grad for param in model.parameters()],
                "buffers": dict(model.named_buffers()),
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    run(int(sys.argv[1]), sys.argv[2])
