"""Whether stage 3's grid can run and what it costs: the labelled images every run needs, checked
before anything trains; a fine-tuning step and a scoring pass measured on this machine; and the seconds
the grid's remaining work will take at that speed."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from byol.cross_validation import cv_training_size
from byol.data import Split
from byol.distributed import Runtime
from byol.errors import UserError
from byol.evaluate import extract_features
from byol.finetune import (
    PROBE_FOLDS,
    ClassifierConfig,
    Examples,
    Job,
    Task,
    fine_tune,
    images_per_step,
    train_probe,
)
from byol.labelled_sets import balanced_subset
from byol.model import MIN_BATCH_SIZE, resnet18_backbone
from byol.timing import finish_time, format_duration

if TYPE_CHECKING:
    from byol.comparison import Grid


@dataclass(frozen=True)
class GridSpeed:
    """What stage 3's work costs on this machine: a fine-tuning step of one global batch, scoring (a
    backbone's forward pass) per image, and a frozen probe's epoch per feature vector it trains on or
    scores (0: probes not counted)."""

    step_seconds: float
    score_images_per_s: float
    probe_image_epoch_seconds: float = 0.0


def measure_grid_speed(
    labelled: Examples, n_classes: int, config: ClassifierConfig, runtime: Runtime
) -> GridSpeed:
    """Time a few fine-tuning steps and a scoring pass of a fresh random backbone on the run's own
    labelled images, batch, size and precision (the global random number generators are left as they were)."""
    n = min(len(labelled), config.batch_size * runtime.ranks.world_size)
    job = Job(0, replace(config, epochs=1, eval_every=1, finetune_lrs=[1e-4], lp_ft=False), runtime)
    with torch.random.fork_rng(devices=[runtime.device] if runtime.device.type == "cuda" else []):
        backbone = resnet18_backbone()
        for repeats in (1, 3):  # a warm-up step, then 3 timed steps
            started = time.perf_counter()
            rows = torch.arange(repeats * n) % len(labelled)
            fine_tune(backbone, Task(labelled[rows], labelled[:n], n_classes), job)
            seconds = time.perf_counter() - started
        started = time.perf_counter()
        features = extract_features(backbone, labelled.inputs, range(n), config.image_size, runtime)
        score_rate = n / (time.perf_counter() - started)
        # One probe at one rate, all its epochs, on features of every labelled image, scoring them.
        inputs = features[torch.arange(len(labelled)) % n].float().cpu()
        probe = Examples(inputs, labelled.labels)
        started = time.perf_counter()
        train_probe(Task(probe, probe, n_classes), replace(job, config=replace(config, probe_lrs=[1e-3])))
        per_image_epoch = (time.perf_counter() - started) / (
            len(labelled) * (config.epochs + evaluations(config))
        )
    return GridSpeed(max(seconds - n / score_rate, 1e-6) / 3, score_rate, per_image_epoch)


def evaluations(config: ClassifierConfig) -> int:
    """How many times a classifier is scored: every eval_every epochs and after the last."""
    return sum(
        1 for epoch in range(1, config.epochs + 1) if epoch % config.eval_every == 0 or epoch == config.epochs
    )


def probe_fits(config: ClassifierConfig, n_train: int, n_scored: int) -> list[tuple[int, int]]:
    """The probe fits (images trained on, images scored) one frozen probe takes: its rate choice's
    (each rate on PROBE_FOLDS folds, trained on the rest) and then the probe itself."""
    fits = [(n_train, n_scored)]
    if len(config.probe_lrs) > 1 and n_train >= 2:
        folds = min(PROBE_FOLDS, n_train)
        held_out = math.ceil(n_train / folds)
        fits += [(n_train - held_out, held_out)] * (len(config.probe_lrs) * folds)
    return fits


@dataclass
class GridWork:
    """What is left of stage 3, in image counts: fine-tuning runs (labelled images and epochs each;
    scored on `n_test` images every eval_every epochs), backbone feature passes (frozen mode: images
    each, once per random seed and once for BYOL), fine-tuning choices (labelled images each: rates x
    folds fine-tunings on the folds' rest, then the other lengths' folds) and frozen probe fits
    (images trained on, images scored: seconds each, but cross-validation and the rate choices
    multiply them by hundreds)."""

    n_test: int
    finetune_runs: list[tuple[int, int]] = field(default_factory=list)
    feature_passes: dict[tuple, int] = field(default_factory=dict)
    choices: dict[tuple, int] = field(default_factory=dict)
    probe_fits: list[tuple[int, int]] = field(default_factory=list)


def grid_seconds(speed: GridSpeed, config: ClassifierConfig, global_batch: int, work: GridWork) -> float:
    """Estimated seconds of `work` at the measured speed."""

    def finetune_seconds(n_train: int, n_scored: int, epochs: int, final_only: bool = False) -> float:
        steps = epochs * math.ceil(n_train / global_batch)
        evals = 1 if final_only else evaluations(replace(config, epochs=epochs))
        return steps * speed.step_seconds + evals * n_scored / speed.score_images_per_s

    total = sum(finetune_seconds(n, work.n_test, epochs) for n, epochs in work.finetune_runs)
    evals = evaluations(config)
    fitted = sum(config.epochs * n_train + evals * n_scored for n_train, n_scored in work.probe_fits)
    total += fitted * speed.probe_image_epoch_seconds
    if config.lp_ft:  # the probe's features first
        total += sum(n for n, _ in work.finetune_runs) / speed.score_images_per_s
    total += sum(work.feature_passes.values()) / speed.score_images_per_s
    for n in work.choices.values():
        held_out = math.ceil(n / config.finetune_folds)
        total += config.finetune_folds * sum(
            finetune_seconds(n - held_out, held_out, epochs, final_only=True)
            for epochs in choice_lengths(config)
        )
    return total


def check_labelled(split: Split, config: ClassifierConfig, world_size: int) -> None:
    """Before the first run trains, so that no count fails hours into the grid: every class has a
    labelled image, and every --n-labels gives each fine-tuning process the two images BatchNorm needs."""
    present = set(split.table.loc[split.indices("labelled"), "label"])
    missing = [name for label, name in enumerate(split.classes) if label not in present]
    if missing:
        raise UserError(
            f"the split has no labelled image of {', '.join(missing)}; re-run data_split.py with "
            f"--n-labelled {len(split.classes)} or more"
        )
    finetune = "finetune" in config.modes
    least = images_per_step(world_size, finetune)
    choosing = finetune and len(config.finetune_lrs) > 1
    for n_labels in config.n_labels:
        n_images = len(balanced_subset(split, n_labels, 0, config.labelled_sets))  # raises if impossible
        if n_images < least:
            raise UserError(
                f"--n-labels {n_images}: fine-tuning in {world_size} process(es) needs {least} labelled "
                f"images or more ({MIN_BATCH_SIZE} per process, for BatchNorm)"
            )
        if config.evaluation == "cv":
            check_folds(split, n_images, balanced_subset(split, n_labels, 0, config.labelled_sets), config)
            n_images = cv_training_size(n_images, config.eval_folds)  # what each fold trains on
        if choosing and cv_training_size(n_images, config.finetune_folds) < least:
            raise UserError(
                f"--n-labels {n_images}: too few to choose the fine-tuning rate by {config.finetune_folds}-"
                f"fold cross-validation (each fold fine-tunes on {least} images or more); lower "
                "--finetune-folds or pass one --finetune-lrs value"
            )


def check_folds(split: Split, n_images: int, rows: list[int], config: ClassifierConfig) -> None:
    """--evaluation cv: every class of a run's labelled images has an image for each fold to hold out."""
    counts = split.table.loc[rows, "label"].value_counts()
    short = [
        f"{split.classes[label]} ({count})" for label, count in counts.items() if count < config.eval_folds
    ]
    if short:
        raise UserError(
            f"--n-labels {n_images}: fewer labelled images than the {config.eval_folds} cross-validation "
            f"folds in class{'es' if len(short) > 1 else ''} {', '.join(short)}; lower --eval-folds or "
            "label more images"
        )


RunKey = tuple  # (init, mode, seed, number of labelled images): one run of the grid


def finetune_choice_key(config: ClassifierConfig, init: str, n_labels: int, seed: int) -> tuple:
    """Which fine-tuning runs share one cross-validated rate: every seed of an (init, label count), on
    seed 0's folds (3 rates x 3 folds on two thirds of the images: about 5 runs' time per choice,
    measured at 250 labels), unless --cv-every-seed."""
    return (init, int(n_labels), int(seed)) if config.cv_every_seed else (init, int(n_labels))


def run_complete(key: RunKey, epochs_done: int, config: ClassifierConfig) -> bool:
    """Whether an earlier run (init, mode, seed, images) holds all its epochs: --epochs, or for a
    fine-tuning run whose length was chosen (--finetune-epochs), whatever length it was given (a run's
    rows are written only once it is complete)."""
    if key[1] == "finetune" and config.finetune_epochs:
        return epochs_done > 0
    return epochs_done == config.epochs


def finetune_lengths(config: ClassifierConfig) -> list[int]:
    """The fine-tuning run lengths a choice may pick (before widening): --finetune-epochs, else --epochs."""
    return config.finetune_epochs or [config.epochs]


def choice_lengths(config: ClassifierConfig) -> list[int]:
    """The epochs of each fine-tuning a rate-then-length choice trains (per fold, or on the validation
    split), before any widening: the rates at --epochs, then the lengths not trained already; [] when
    there is nothing to choose (choose_rate_then_length)."""
    lengths = config.finetune_epochs if len(config.finetune_epochs) > 1 else []
    if len(config.finetune_lrs) < 2:
        return list(lengths)
    return [config.epochs] * len(config.finetune_lrs) + [n for n in lengths if n != config.epochs]


def choice_text(config: ClassifierConfig) -> str:
    """What a rate-then-length choice tries: '3 rates', '2 lengths' or '3 rates then 2 lengths'."""
    rates, lengths = len(config.finetune_lrs), len(config.finetune_epochs)
    return " then ".join([f"{rates} rates"] * (rates > 1) + [f"{lengths} lengths"] * (lengths > 1))


def remaining_work(grid: Grid, epochs_done: dict[RunKey, int]) -> tuple[GridWork, int, int]:
    """The work the grid has left, how many runs that is, and the cross-validation's folds (1: none)."""
    config, split = grid.config, grid.split
    folds = config.eval_folds if config.evaluation == "cv" else 1
    held_out = max(math.ceil(n / folds) for n in config.n_labels) if folds > 1 else 0
    pending, work = 0, GridWork(n_test=held_out or len(split.indices(config.score_split)))
    for n_labels, seed, init, mode in grid.runs:
        n = len(balanced_subset(split, n_labels, seed, config.labelled_sets))
        if run_complete((init, mode, seed, n), epochs_done.get((init, mode, seed, n), 0), config):
            continue
        pending += 1
        add_work = add_frozen_work if mode == "frozen" else add_finetune_work
        add_work(work, grid, (init, seed, n), folds)
    return work, pending, folds


def add_frozen_work(work: GridWork, grid: Grid, run: tuple[str, int, int], folds: int) -> None:
    """A frozen run's probe fits (and its rate choices'; for random init, both BatchNorm variants'
    scored on validation) and the feature passes its backbone needs (`run`: init, seed, images)."""
    config, split = grid.config, grid.split
    init, seed, n = run
    validation = len(split.indices("validation"))
    recalibrates = init == "random" and bool(config.bn_images and validation and split.indices("unlabelled"))
    fits = [(cv_training_size(n, folds), math.ceil(n / folds))] * folds if folds > 1 else [(n, work.n_test)]
    for n_train, n_scored in fits:
        work.probe_fits += probe_fits(config, n_train, n_scored)
        if recalibrates:
            work.probe_fits += 2 * probe_fits(config, n_train, validation)
    key = (init,) if init == "byol" else (init, seed)
    own_set = n if config.labelled_sets == "per-seed" and seed else 0  # beside the split's labelled
    if recalibrates and key not in work.feature_passes:
        # recalibrating, then both backbones' features of the validation split and the labelled
        own_set += config.bn_images + len(split.indices("labelled")) + 2 * validation
    n_features = len(split.indices("labelled")) + (0 if folds > 1 else work.n_test)
    work.feature_passes[key] = work.feature_passes.get(key, n_features) + own_set


def add_finetune_work(work: GridWork, grid: Grid, run: tuple[str, int, int], folds: int) -> None:
    """A fine-tuning run (one per fold under cross-validation) and the rate choices it still needs."""
    config = grid.config
    init, seed, n = run
    choosing = bool(choice_lengths(config))
    longest = max(finetune_lengths(config))  # before the choice, the longest its run may take
    if folds > 1:  # each fold trains on the rest, its rate chosen on them
        n_train = cv_training_size(n, folds)
        work.finetune_runs += [(n_train, longest)] * folds
        if choosing:
            work.choices.update({(init, n, seed, fold): n_train for fold in range(folds)})
        return
    key = finetune_choice_key(config, init, n, seed)
    chosen = grid.finetune_choices.get(key)
    work.finetune_runs.append((n, chosen[1] if chosen else longest))
    if choosing and not chosen:
        work.choices[key] = n


def plan_line(grid: Grid, epochs_done: dict[RunKey, int]) -> str:
    """What stage 3 is about to train, and how long that will take at the speed measured here."""
    config, split, runtime = grid.config, grid.split, grid.runtime
    work, pending, folds = remaining_work(grid, epochs_done)
    done = len(grid.runs) - pending
    counts = (
        f"{len(grid.runs)} runs ({len(config.inits)} inits x {len(config.modes)} modes x "
        f"{config.seeds} seeds x {len(config.n_labels)} label counts)"
        + (f", {done} already done" if done else "")
    )
    if not pending:
        return f"plan: {counts}: nothing left to train"
    speed = measure_grid_speed(grid.examples(split.indices("labelled")), grid.n_classes, config, runtime)
    global_batch = config.batch_size * runtime.ranks.world_size
    seconds = grid_seconds(speed, config, global_batch, work)
    cv = f", {len(work.choices)} fine-tuning choices ({choice_text(config)} x {config.finetune_folds} folds)"
    scoring = (
        f", each scored by {folds}-fold cross-validation on its labelled images"
        if folds > 1
        else f", scored on the {config.score_split} split"
    )
    return (
        f"plan: {counts}{scoring}{cv if work.choices else ''}; {runtime.precision} on {runtime.device}. "
        f"Measured here: {speed.step_seconds:.2f} s per fine-tuning step of {global_batch} and "
        f"{speed.score_images_per_s:.0f} images/s scoring; about {format_duration(seconds)}, finishing "
        f"about {finish_time(seconds)}"
    )
