"""Optimisers for pretraining: LARS (the paper's), SGD and AdamW, all with the same parameter groups.

Biases and normalisation parameters get no weight decay and, under LARS, no trust-ratio scaling,
as in the paper (appendix C).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from byol.errors import UserError

if TYPE_CHECKING:
    from byol.pretrain_config import PretrainConfig

OPTIMIZERS = ("lars", "sgd", "adamw")
# Learning rate for a batch of 256; scaled linearly with the batch size (the paper's rule).
BASE_LR_PER_256 = {"lars": 0.2, "sgd": 0.05, "adamw": 1e-3}


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step for each weight tensor is scaled by eta * ||w|| / ||g + wd w||.

    With `clip` (LARC, as solo-learn's `clip_lars_lr` for small images) that scale is capped at 1:
    a tensor's rate is min(eta * ||w|| / ||g + wd w||, lr) instead of lr times the ratio, so no
    layer moves faster than plain SGD at lr would move it.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
        clip: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "lars": True,
            "trust_coefficient": trust_coefficient,
            "clip": clip,
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
                if group["clip"] and group["lr"] > 0:
                    trust = torch.clamp(trust / group["lr"], max=1.0)
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


def parameter_groups(model: nn.Module, weight_decay: float, predictor_lr_scale: float = 1.0) -> list[dict]:
    """Weights of Linear/Conv layers decay; biases and BatchNorm parameters (all 1-d) do not.

    BYOL's predictor (a module named `predictor`) gets groups of its own whose rate is
    `predictor_lr_scale` x the scheduled rate (see `set_learning_rates`).
    """
    groups = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            own = name.startswith("predictor.") and predictor_lr_scale != 1.0
            key = (param.ndim <= 1, own)
            groups.setdefault(key, []).append(param)
    return [
        {
            "params": params,
            "weight_decay": 0.0 if no_decay else weight_decay,
            "lars": not no_decay,
            "lr_scale": predictor_lr_scale if own else 1.0,
        }
        for (no_decay, own), params in sorted(groups.items())
    ]


def set_learning_rates(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """This step's rate in every group: the schedule's `lr` times the group's own scale."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def default_lr(optimizer: str, batch_size: int) -> float:
    return BASE_LR_PER_256[optimizer] * batch_size / 256


def make_optimizer(config: PretrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimiser a resolved PretrainConfig names (--optimizer, --lr, --weight-decay, --lars-trust,
    --lars-clip, --predictor-lr-scale) over the model's parameter groups: the run's, and the speed probe's
    (byol.budget), from the one config."""
    name, lr = config.optimizer, config.lr
    groups = parameter_groups(model, config.weight_decay, config.predictor_lr_scale)
    if name == "lars":
        return LARS(groups, lr=lr, trust_coefficient=config.lars_trust, clip=config.lars_clip)
    for group in groups:  # LARS's own key; SGD and AdamW would keep it in their state for nothing
        del group["lars"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise UserError(f"--optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")
