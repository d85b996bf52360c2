"""Sizing a pretraining run to a time budget, and saying up front how long a run will take.

The speed is measured, not guessed: a few training steps on a throwaway copy of the model, with
the run's own views, batch, precision and device (the run's model, optimiser and random number
generators are left untouched), and the monitor's features on a sample of its images. The number
of epochs is then fixed before the first real step, so the learning-rate and tau schedules are
known from the start and --resume stays exact.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from dataclasses import dataclass

import torch

from byol.device import MEMORY_FORMAT, grad_scaler
from byol.evaluate import extract_features
from byol.model import BYOL, RESNET18_FEATURES, resnet18_backbone
from byol.optim import make_optimizer
from byol.step import Trainer, seeded_generator, step_views, train_step

SETTINGS = ("auto", "gpu", "cpu", "reference")
DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str) -> float:
    """Seconds in "90s", "20m", "2h", "1h30m" or "1.5h"; a plain number is minutes."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text) * 60
    match = DURATION.fullmatch(text)
    if not text or not match:
        raise ValueError(f"not a duration like 20m, 2h or 1h30m: {text!r}")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def duration(text: str) -> float:
    """argparse type: a duration in seconds (argparse turns the error into one line, exit 2)."""
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return seconds


@dataclass(frozen=True)
class Speed:
    """What a pretraining epoch costs on this machine."""

    images_per_s: float  # training images per second (each image counted once, not per view)
    monitor_seconds: float  # one k-NN monitor pass


def epoch_seconds(speed: Speed, steps_per_epoch: int, global_batch: int) -> float:
    """One epoch's training and its monitor pass."""
    return steps_per_epoch * global_batch / speed.images_per_s + speed.monitor_seconds


def epochs_for_budget(budget_s: float, speed: Speed, steps_per_epoch: int, global_batch: int) -> int:
    """The most epochs (each with its monitor) that fit in `budget_s`, and at least one; the random
    init's monitor (epoch 0) is paid first."""
    per_epoch = epoch_seconds(speed, steps_per_epoch, global_batch)
    return max(1, math.floor((budget_s - speed.monitor_seconds) / per_epoch))


def measure_speed(run, steps: int = 4, warmup: int = 2, monitor_sample: int = 512) -> Speed:
    """Time `steps` whole training steps (views and step, after `warmup`) of a fresh model like the
    run's, on its images, views, batch, precision and device; and the monitor's feature pass on a
    sample of its images. The run's model, optimiser and random number generators are not touched."""
    config, device = run.config, run.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = BYOL(resnet18_backbone(), RESNET18_FEATURES).to(device, memory_format=MEMORY_FORMAT)
        optimizer = make_optimizer(
            config.optimizer, model, config.lr, config.weight_decay, lars_trust=config.lars_trust
        )
        scaler = grad_scaler(device, run.precision)
        generator = seeded_generator(config.seed + 1, 0, device)  # not the run's own
        order = torch.Generator().manual_seed(config.seed + 1)
        rows = torch.tensor(run.train_indices)
        seconds = 0.0
        for step in range(warmup + steps):
            batch = rows[torch.randint(0, len(rows), (run.global_batch,), generator=order)]
            started = time.perf_counter()
            views = step_views(run.images, batch, run.views, generator, run.runtime)
            loss = train_step(Trainer(model, model, optimizer, scaler, run.runtime), *views, 1e-4, 0.99)
            loss.item()  # waits for the device, as the training loop does once per step
            if step >= warmup:
                seconds += time.perf_counter() - started
        watched = list(dict.fromkeys(run.watched.labelled + run.watched.validation + run.watched.voters))
        sample = watched[:monitor_sample]
        started = time.perf_counter()
        if sample:
            extract_features(model.backbone, run.images, sample, config.image_size, run.runtime)
        monitor_seconds = (time.perf_counter() - started) * len(watched) / max(1, len(sample))
    return Speed(images_per_s=steps * run.global_batch / seconds, monitor_seconds=monitor_seconds)
