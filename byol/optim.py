"""Optimisers for pretraining: LARS (the paper's), SGD and AdamW, all with the same parameter groups.

Biases and normalisation parameters get no weight decay and, under LARS, no trust-ratio scaling,
as in the paper (appendix C).
"""

from __future__ import annotations

import torch
from torch import nn

from byol.errors import UserError

OPTIMIZERS = ("lars", "sgd", "adamw")
# Learning rate for a batch of 256; scaled linearly with the batch size (the paper's rule).
BASE_LR_PER_256 = {"lars": 0.2, "sgd": 0.05, "adamw": 1e-3}


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step for each weight tensor is scaled by eta * ||w|| / ||g + wd w||."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "lars": True,
            "trust_coefficient": trust_coefficient,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        # Multi-tensor (_foreach) ops: one kernel launch per operation for the whole group instead of
        # one per tensor, which matters on CPU where a per-tensor Python loop cost ~10 % of a step.
        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            if not params:
                continue
            grads = [param.grad for param in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            if group["lars"]:
                param_norms = torch.stack(torch._foreach_norm(params))
                grad_norms = torch.stack(torch._foreach_norm(grads))
                trust = torch.where(
                    (param_norms > 0) & (grad_norms > 0),
                    group["trust_coefficient"] * param_norms / grad_norms,
                    torch.ones_like(param_norms),
                )
                grads = torch._foreach_mul(grads, list(trust.unbind()))
            buffers = []
            for param in params:
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param)
                buffers.append(state["momentum_buffer"])
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_add_(buffers, grads)
            torch._foreach_add_(params, buffers, alpha=-group["lr"])


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weights of Linear/Conv layers decay; biases and BatchNorm parameters (all 1-d) do not."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def default_lr(optimizer: str, batch_size: int) -> float:
    return BASE_LR_PER_256[optimizer] * batch_size / 256


def make_optimizer(
    name: str, model: nn.Module, lr: float, weight_decay: float, lars_trust: float = 1e-3
) -> torch.optim.Optimizer:
    groups = parameter_groups(model, weight_decay)
    if name == "lars":
        groups[1]["lars"] = False
        return LARS(groups, lr=lr, trust_coefficient=lars_trust)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise UserError(f"--optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")
