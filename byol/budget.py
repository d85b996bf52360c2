"""Sizing a pretraining run to a time budget, and saying up front how long a run will take.

The speed is measured, not guessed: 16 training steps (or 40 s of them; a short run without a budget
times fewer) on a throwaway copy of the model, with the run's own views, batch, precision and device
(the run's model, optimiser and random number generators are left untouched), and the monitor's
features on a sample of its images. The number of epochs is then fixed before the first real step, so
the learning-rate and tau schedules are known from the start and --resume stays exact.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from byol.checkpoint import TrainState
from byol.device import MEMORY_FORMAT, grad_scaler
from byol.evaluate import extract_features
from byol.model import BYOL, RESNET18_FEATURES, resnet18_backbone
from byol.optim import make_optimizer
from byol.pretrain_config import PretrainConfig
from byol.step import Trainer, seeded_generator, step_views, train_step
from byol.timing import finish_time, format_duration

if TYPE_CHECKING:
    from byol.pretrain import Run

log = logging.getLogger(__name__)

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


# How long the speed probe times training steps. One step's time varies by about +-10 % on a shared
# 2-core CPU: 24 fp32 steps on the AMD EPYC without bf16 units took 1.53-2.14 s, so 4-step means ranged
# over 32.9-39.9 images/s and 16-step means over 35.2-36.5. The default pipeline there planned on a
# 4-step probe of 33.0 images/s and trained its epochs at 33.4-35.8 (about 5 % under its budget); on the
# AMD EPYC with bf16 units a probe of 128 trained at about 151. At most PROBE_SECONDS where steps are
# slow, and never fewer than PROBE_MIN_STEPS. A run without a budget measures only for its ETA: at most a
# PROBE_SHARE-th of the steps it has left (a 4-epoch demo of 28 steps would otherwise time 16 more).
PROBE_STEPS = 16
PROBE_MIN_STEPS = 4
PROBE_SECONDS = 40.0
PROBE_SHARE = 20


def probe_steps(steps_left: int | None) -> int:
    """The steps the speed probe times: PROBE_STEPS where the run's length waits on the speed (a time
    budget: `steps_left` None), else at most a PROBE_SHARE-th of the steps left, PROBE_MIN_STEPS at
    least."""
    if steps_left is None:
        return PROBE_STEPS
    return max(PROBE_MIN_STEPS, min(PROBE_STEPS, steps_left // PROBE_SHARE))


def measure_speed(run, steps_left: int | None = None, warmup: int = 2, monitor_sample: int = 512) -> Speed:
    """Time `probe_steps(steps_left)` whole training steps (views and step, after `warmup`; fewer where
    they pass PROBE_SECONDS) of a fresh model like the run's, on its images, views, batch, precision
    and device, at each of its view sizes (a run with --progressive-sizes spends an equal share of its
    steps at each: its speed is their mean step's); and the monitor's feature pass on a sample of its
    images. The run's model, optimiser and random number generators are not touched."""
    config, device = run.config, run.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = BYOL(resnet18_backbone(), RESNET18_FEATURES).to(device, memory_format=MEMORY_FORMAT)
        trainer = Trainer(
            model, model, make_optimizer(config, model), grad_scaler(device, run.precision), run.runtime
        )
        generator = seeded_generator(config.seed + 1, 0, device)  # not the run's own
        order = torch.Generator().manual_seed(config.seed + 1)
        step_seconds = [
            seconds_per_step(run, trainer, views, (generator, order), (probe_steps(steps_left), warmup))
            for views in run.views.values()
        ]
        watched = list(dict.fromkeys(run.watched.labelled + run.watched.validation + run.watched.voters))
        sample = watched[:monitor_sample]
        started = time.perf_counter()
        if sample:
            extract_features(model.backbone, run.images, sample, config.image_size, run.runtime)
        monitor_seconds = (time.perf_counter() - started) * len(watched) / max(1, len(sample))
    mean_step = sum(step_seconds) / len(step_seconds)
    return Speed(images_per_s=run.global_batch / mean_step, monitor_seconds=monitor_seconds)


def seconds_per_step(run, trainer: Trainer, views, generators: tuple, counts: tuple[int, int]) -> float:
    """One view size's mean step: `counts` = (steps timed, warm-up steps before them) on random batches
    of the run's images drawn with `generators` = (the views', the rows'); the timing stops early, after
    at least PROBE_MIN_STEPS, once it has taken PROBE_SECONDS."""
    generator, order = generators
    steps, warmup = counts
    rows = torch.tensor(run.train_indices)
    seconds, timed = 0.0, 0
    for step in range(warmup + steps):
        batch = rows[torch.randint(0, len(rows), (run.global_batch,), generator=order)]
        started = time.perf_counter()
        view_1, view_2 = step_views(run.images, batch, views, generator, run.runtime)
        loss = train_step(trainer, view_1, view_2, 1e-4, 0.99)
        loss.item()  # waits for the device, as the training loop does once per step
        if step >= warmup:
            seconds += time.perf_counter() - started
            timed += 1
            if timed >= PROBE_MIN_STEPS and seconds >= PROBE_SECONDS:
                break
    return seconds / timed


def fix_epochs(run: Run, speed: Speed | None, budget_s: float, resumed: bool) -> None:
    """With a time budget (`budget_s`), a new run trains the number of epochs that fit at the measured
    speed, the same on every process: fixed now, so the schedules know their end. A resumed run keeps
    the epochs it started with."""
    if budget_s and not resumed:
        epochs = epochs_for_budget(budget_s, speed, run.steps_per_epoch, run.global_batch)
        ranks = run.ranks
        epochs = int(ranks.all_reduce_sum(torch.tensor(float(epochs if ranks.is_main else 0))).item())
        run.config = replace(run.config, epochs=epochs)
        log.info(f"time budget {format_duration(budget_s)}: {epochs} epochs fit at the measured speed")
    elif budget_s:
        log.info("--time-budget: a resumed run keeps the number of epochs it started with")


def monitored_after(config: PretrainConfig, epoch: int) -> bool:
    """Whether the k-NN monitor runs after `epoch` (every --knn-every epochs, and after the last)."""
    return epoch == config.epochs or bool(config.knn_every and epoch % config.knn_every == 0)


def plan_line(run: Run, state: TrainState, speed: Speed | None) -> str:
    """What the run is about to do, and how long it will take at the measured speed (None where no
    step is left: a finished run, resumed, measures nothing)."""
    config = run.config
    steps_left = run.total_steps - state.step
    if steps_left == 0:
        return f"plan: all {run.total_steps} steps already done: nothing left to train"
    epochs_left = config.epochs - state.epoch
    monitored = sum(monitored_after(config, epoch) for epoch in range(state.epoch + 1, config.epochs + 1))
    seconds = steps_left * run.global_batch / speed.images_per_s + monitored * speed.monitor_seconds
    done = f"; {state.step} of {run.total_steps} steps already done" if state.step else ""
    return (
        f"plan: {len(run.train_indices)} images, {run.steps_per_epoch} steps/epoch x {config.epochs} epochs "
        f"= {run.total_steps} steps of {run.global_batch} images, {run.precision} on {run.device}{done}. "
        f"Measured here: {speed.images_per_s:.1f} images/s and {speed.monitor_seconds:.0f} s per k-NN "
        f"monitor; {epochs_left} epoch(s) left: about {format_duration(seconds)}, finishing about "
        f"{finish_time(seconds)}"
    )
