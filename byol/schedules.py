"""Schedules as pure functions of the step: the EMA rate tau and the learning rate."""

from __future__ import annotations

import math


def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    """Cosine from `start` at step 0 to `end` at `total_steps`."""
    progress = min(step, total_steps) / max(total_steps, 1)
    return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2


def tau_at(step: int, total_steps: int, tau_base: float) -> float:
    """The paper's EMA rate: tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2, rising to 1."""
    return cosine_schedule(step, total_steps, tau_base, 1.0)


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up to `base_lr`, then cosine decay to 0 (the paper's schedule)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    return cosine_schedule(step - warmup_steps, total_steps - warmup_steps, base_lr, 0.0)
