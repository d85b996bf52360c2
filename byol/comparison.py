"""The comparison grid: {random, byol} x {finetune, frozen} x seeds x label counts, and its summary.

Writes classifier_metrics.csv (one row per run and epoch), classifier_summary.csv (final test accuracy
mean and std over seeds per condition) and classifier_config.json; resumes by skipping completed runs.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from byol.cache import load_cache
from byol.data import Split, read_split
from byol.device import resolve_precision
from byol.distributed import Runtime, process_group
from byol.errors import UserError
from byol.evaluate import extract_features, recalibrate_batchnorm
from byol.files import read_csv, read_json, write_csv, write_json
from byol.finetune import (
    PREDICTIONS_KEY,
    ClassifierConfig,
    Examples,
    Job,
    Task,
    balanced_subset,
    choose_finetune_lr,
    cv_training_size,
    fine_tune,
    images_per_step,
    labelled_set_id,
    load_byol_backbone,
    make_backbone,
    train_probe,
)
from byol.model import MIN_BATCH_SIZE, resnet18_backbone
from byol.outputs import (
    CLASSIFIER_CONFIG_FILE,
    CLASSIFIER_METRIC_COLUMNS,
    CLASSIFIER_METRICS_FILE,
    CLASSIFIER_SUMMARY_FILE,
    PAIRED_FILE,
    PREDICTION_INDEX,
    PREDICTIONS_FILE,
    prediction_column,
)
from byol.report import mean_and_std, paired_text
from byol.resume import check_fresh_start, check_resumable
from byol.stats import paired_summary, predictions_table, rate_limits, summarize
from byol.timing import finish_time, format_duration

log = logging.getLogger(__name__)


def frozen_only_settings(config: ClassifierConfig) -> tuple[str, ...]:
    """Settings only the frozen runs depend on: --resume with other values retrains those runs and
    keeps the rest. With --lp-ft the fine-tuning runs start from the probe, so none."""
    return () if config.lp_ft else ("probe_lrs", "bn_images")


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
    short = [split.classes[label] for label, count in counts.items() if count < config.eval_folds]
    if short:
        raise UserError(
            f"--n-labels {n_images}: class {', '.join(short)} has fewer labelled images "
            f"({int(counts.min())}) than the {config.eval_folds} cross-validation folds; lower --eval-folds "
            "or label more images"
        )


def finetune_choice_key(config: ClassifierConfig, init: str, n_labels: int, seed: int) -> tuple:
    """Which fine-tuning runs share one cross-validated rate: every seed of an (init, label count), on
    seed 0's folds (3 rates x 3 folds on two thirds of the images: about 5 runs' time per choice,
    measured at 250 labels), unless --cv-every-seed."""
    return (init, int(n_labels), int(seed)) if config.cv_every_seed else (init, int(n_labels))


def run_classifiers(
    config: ClassifierConfig,
    out_dir: Path,
    device_name: str = "auto",
    precision_name: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Train every condition, write classifier_metrics.csv and classifier_summary.csv, return the summary.

    With `resume`, conditions already complete in classifier_metrics.csv (same settings) are kept; an
    earlier classifier_metrics.csv needs `resume` or `overwrite` (start over).
    Under torchrun every process calls this; fine-tuning is data-parallel, rank 0 writes the files.
    """
    config.check()
    check_fresh_start(Path(out_dir), (CLASSIFIER_METRICS_FILE,), resume, overwrite)
    with process_group(device_name) as (ranks, device):
        runtime = Runtime(device, resolve_precision(precision_name, device), ranks)
        return _run_classifiers(config, Path(out_dir), runtime, resume)


@dataclass(frozen=True)
class GridSpeed:
    """What stage 3's work costs on this machine: a fine-tuning step of one global batch, and scoring
    (a backbone's forward pass) per image."""

    step_seconds: float
    score_images_per_s: float


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
        extract_features(backbone, labelled.inputs, range(n), config.image_size, runtime)
        score_rate = n / (time.perf_counter() - started)
    return GridSpeed(max(seconds - n / score_rate, 1e-6) / 3, score_rate)


@dataclass
class GridWork:
    """What is left of stage 3, in image counts: fine-tuning runs (labelled images each; scored on
    `n_test` images every eval_every epochs), backbone feature passes (frozen mode: images each, once
    per random seed and once for BYOL), and fine-tuning rate choices (labelled images each: rates x
    folds fine-tunings on the folds' rest). The linear probes themselves take seconds: not counted."""

    n_test: int
    finetune_runs: list[int] = field(default_factory=list)
    feature_passes: dict[tuple, int] = field(default_factory=dict)
    choices: dict[tuple, int] = field(default_factory=dict)


def grid_seconds(speed: GridSpeed, config: ClassifierConfig, global_batch: int, work: GridWork) -> float:
    """Estimated seconds of `work` at the measured speed."""

    def finetune_seconds(n_train: int, n_scored: int, evals: int) -> float:
        steps = config.epochs * math.ceil(n_train / global_batch)
        return steps * speed.step_seconds + evals * n_scored / speed.score_images_per_s

    epochs = range(1, config.epochs + 1)
    evals = sum(1 for epoch in epochs if epoch % config.eval_every == 0 or epoch == config.epochs)
    total = sum(finetune_seconds(n, work.n_test, evals) for n in work.finetune_runs)
    if config.lp_ft:  # the probe's features first
        total += sum(work.finetune_runs) / speed.score_images_per_s
    total += sum(work.feature_passes.values()) / speed.score_images_per_s
    for n in work.choices.values():
        held_out = math.ceil(n / config.finetune_folds)
        folds = config.finetune_folds * len(config.finetune_lrs)
        total += folds * finetune_seconds(n - held_out, held_out, 1)
    return total


RunKey = tuple  # (init, mode, seed, number of labelled images): one run of the grid


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> list[list[int]]:
    """Positions 0..len(labels)-1 dealt into `folds` held-out parts, every class spread evenly: each
    class's positions in a seeded order, dealt round-robin, the deal running on from class to class so
    that the parts' sizes differ by one at most."""
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[int]] = [[] for _ in range(folds)]
    dealt = 0
    for label in sorted(set(labels.tolist())):
        members = (labels == label).nonzero().flatten()
        for position in members[torch.randperm(len(members), generator=generator)].tolist():
            parts[dealt % folds].append(position)
            dealt += 1
    return [sorted(part) for part in parts]


def pool_folds(fold_runs: list[list[dict]], sizes: list[int]) -> list[dict]:
    """Cross-validation's metrics rows, epoch by epoch: training loss and accuracy averaged over the
    folds, held-out loss and accuracy weighted by each fold's held-out images (NaN on the epochs
    nothing was scored), seconds summed, rates the folds' median."""
    total = sum(sizes)
    pooled = []
    for epoch_rows in zip(*fold_runs):
        row = dict(epoch_rows[0])
        for name in ("train_loss", "train_acc"):
            row[name] = sum(r[name] for r in epoch_rows) / len(epoch_rows)
        for name in ("test_loss", "test_acc"):
            row[name] = sum(r[name] * size for r, size in zip(epoch_rows, sizes)) / total
        row["seconds"] = sum(r["seconds"] for r in epoch_rows)
        for name in ("head_lr", "backbone_lr"):
            row[name] = float(torch.tensor([r[name] for r in epoch_rows], dtype=torch.float64).median())
        row.pop(PREDICTIONS_KEY, None)
        pooled.append(row)
    return pooled


@dataclass
class Grid:
    """Stage 3's runs and what they share: the split, its cached images and labels, byol.pt's backbone,
    the runtime; the fine-tuning rates chosen and the frozen features computed so far."""

    config: ClassifierConfig
    split: Split
    images: torch.Tensor  # (N, 3, S, S) uint8, every cache row
    labels: torch.Tensor
    byol_state: dict | None
    runtime: Runtime
    # The fine-tuning rate per (init, label count), or per (init, label count, seed) with
    # --cv-every-seed (finetune_choice_key): kept from the runs already complete, else chosen when
    # first needed.
    finetune_lrs: dict[tuple, float] = field(default_factory=dict)
    # Frozen features depend on the backbone only: once per BYOL backbone, once per random seed (and
    # once per random seed's recalibrated backbone).
    frozen_features: dict[tuple, dict[int, torch.Tensor]] = field(default_factory=dict)
    recalibrated: dict[int, nn.Module] = field(default_factory=dict)  # per seed: frozen_random's

    @property
    def runs(self) -> list[tuple[int, int, str, str]]:
        """(label count, seed, init, mode) in the order they train: a seed's four conditions together."""
        config = self.config
        return [
            (n, seed, init, mode)
            for n in config.n_labels
            for seed in range(config.seeds)
            for init in config.inits
            for mode in config.modes
        ]

    def predictions(self, runs: dict[str, dict[int, int]]) -> pd.DataFrame:
        """classifier_predictions.csv from each run's predicted class per scored cache row."""
        rows = sorted(set().union(*runs.values())) if runs else self.split.indices(self.config.score_split)
        return predictions_table(rows, self.labels[rows].tolist(), runs)

    @property
    def n_classes(self) -> int:
        return len(self.split.classes)

    def examples(self, rows: list[int]) -> Examples:
        return Examples(self.images[rows], self.labels[rows])

    def finetune_lr(self, init: str, n_labels: int, n_train: int, seed: int, progress: tqdm) -> float:
        """The backbone rate of a fine-tuning run on `n_train` images (the balanced subset drawn for
        `n_labels`): chosen once per finetune_choice_key, on seed 0's labelled images (each seed's with
        --cv-every-seed)."""
        config = self.config
        choice = finetune_choice_key(config, init, n_train, seed)
        if choice not in self.finetune_lrs:
            cv_seed = seed if config.cv_every_seed else 0
            cv_images = self.examples(balanced_subset(self.split, n_labels, cv_seed, config.labelled_sets))
            job = Job(cv_seed, config, self.runtime, progress)
            self.finetune_lrs[choice] = choose_finetune_lr(
                init, self.byol_state, cv_images, self.n_classes, job
            )
        return self.finetune_lrs[choice]

    def features(self, key: tuple, backbone: nn.Module, rows: list[int]) -> Examples:
        """Frozen mode's inputs: `backbone`'s features of cache rows `rows`, each image's computed once
        per backbone (`key`: BYOL's serves every seed) and kept."""
        lookup = self.frozen_features.setdefault(key, {})
        missing = [row for row in dict.fromkeys(rows) if row not in lookup]
        if missing:
            runtime = self.runtime
            backbone = backbone.to(runtime.device, memory_format=runtime.memory_format)
            features = extract_features(backbone, self.images, missing, self.config.image_size, runtime).cpu()
            lookup.update(zip(missing, features))
        return Examples(torch.stack([lookup[row] for row in rows]), self.labels[rows])

    def frozen_random(self, seed: int, backbone: nn.Module, train_rows: list[int]) -> tuple[tuple, nn.Module]:
        """The frozen random backbone a run's probe trains on, and its features' key: as initialised, or
        with its BatchNorm statistics recomputed on --bn-images unlabelled images (recalibrate_batchnorm)
        when a probe on the run's labelled images scores higher with them on the validation split. The
        test split plays no part; without validation or unlabelled images, as initialised."""
        config, runtime = self.config, self.runtime
        validation, unlabelled = self.split.indices("validation"), self.split.indices("unlabelled")
        plain = (("random", seed), backbone)
        if not (config.bn_images and validation and unlabelled):
            return plain
        if seed not in self.recalibrated:
            order = torch.randperm(len(unlabelled), generator=torch.Generator().manual_seed(seed))
            rows = [unlabelled[i] for i in order[: config.bn_images].tolist()]
            copy = make_backbone("random", seed, None).to(runtime.device, memory_format=runtime.memory_format)
            self.recalibrated[seed] = recalibrate_batchnorm(
                copy, self.images, rows, config.image_size, runtime
            )
        recalibrated = (("random", seed, "bn"), self.recalibrated[seed])
        scores = []
        for key, candidate in (plain, recalibrated):
            task = Task(
                self.features(key, candidate, train_rows),
                self.features(key, candidate, validation),
                self.n_classes,
            )
            scores.append(train_probe(task, Job(seed, config, runtime))[-1]["test_acc"])
        return recalibrated if scores[1] > scores[0] else plain

    def fit(
        self, run: tuple, train_rows: list[int], scored_rows: list[int], lr: float | None, progress: tqdm
    ) -> tuple[list[dict], bool]:
        """One classifier trained on cache rows `train_rows` and scored on `scored_rows` (fine-tuned at
        backbone rate `lr`): its metrics rows, the last with the predicted classes, and whether its
        frozen random backbone had its BatchNorm statistics recalibrated."""
        n_labels, seed, init, mode = run
        config = replace(self.config, finetune_lrs=[lr]) if mode == "finetune" else self.config
        backbone = make_backbone(init, seed, self.byol_state)
        job = Job(seed, config, self.runtime, progress)
        if mode == "finetune":
            task = Task(self.examples(train_rows), self.examples(scored_rows), self.n_classes)
            return fine_tune(backbone, task, job), False
        key, backbone = (
            self.frozen_random(seed, backbone, train_rows) if init == "random" else ((init,), backbone)
        )
        task = Task(
            self.features(key, backbone, train_rows),
            self.features(key, backbone, scored_rows),
            self.n_classes,
        )
        return train_probe(task, job), "bn" in key

    def cross_validated(self, run: tuple, train_rows: list[int], progress: tqdm) -> tuple[list[dict], bool]:
        """--evaluation cv: the run's labelled images in config.eval_folds stratified folds (drawn by
        its seed); each fold's classifier trains on the others, with its rates chosen on them alone, and
        predicts its own. The metrics rows pool the folds: training loss and accuracy averaged,
        held-out loss and accuracy over every labelled image (as test_loss and test_acc), rates the
        folds' median; the last row's predictions cover every labelled image once."""
        n_labels, seed, init, mode = run
        config = self.config
        fold_runs, sizes, predictions, recalibrated = [], [], {}, False
        for held in stratified_folds(self.labels[train_rows], config.eval_folds, seed):
            scored = [train_rows[i] for i in held]
            kept = [row for row in train_rows if row not in set(scored)]
            lr = None
            if mode == "finetune":
                job = Job(seed, config, self.runtime, progress)
                lr = choose_finetune_lr(init, self.byol_state, self.examples(kept), self.n_classes, job)
            rows, fold_recalibrated = self.fit(run, kept, scored, lr, progress)
            predictions.update(zip(scored, rows[-1].pop(PREDICTIONS_KEY).tolist()))
            fold_runs.append(rows)
            sizes.append(len(scored))
            recalibrated |= fold_recalibrated
        pooled = pool_folds(fold_runs, sizes)
        pooled[-1][PREDICTIONS_KEY] = predictions
        return pooled, recalibrated

    def train(self, run: tuple[int, int, str, str], train_rows: list[int], progress: tqdm) -> list[dict]:
        """One run's metrics rows, each with its init, mode, seed and number of labelled images;
        `train_rows` are the run's balanced subset (balanced_subset(split, n_labels, seed)). Scored on
        config.score_split, or by cross-validation on `train_rows` (--evaluation cv). The last row holds
        the predicted class per scored cache row, a dict, under PREDICTIONS_KEY."""
        n_labels, seed, init, mode = run
        if self.config.evaluation == "cv":
            rows, recalibrated = self.cross_validated(run, train_rows, progress)
        else:
            lr = (
                self.finetune_lr(init, n_labels, len(train_rows), seed, progress)
                if mode == "finetune"
                else None
            )
            scored = self.split.indices(self.config.score_split)
            rows, recalibrated = self.fit(run, train_rows, scored, lr, progress)
            rows[-1][PREDICTIONS_KEY] = dict(zip(scored, rows[-1][PREDICTIONS_KEY].tolist()))
        labels = {
            "init": init,
            "mode": mode,
            "seed": seed,
            "n_labels": len(train_rows),
            "labelled_set": labelled_set_id(self.split, train_rows),
            "bn_recalibrated": recalibrated,
        }
        return [{**labels, **row} for row in rows]


def plan_line(grid: Grid, epochs_done: dict[RunKey, int]) -> str:
    """What stage 3 is about to train, and how long that will take at the speed measured here."""
    config, split, runtime = grid.config, grid.split, grid.runtime
    folds = config.eval_folds if config.evaluation == "cv" else 1
    held_out = max(math.ceil(n / folds) for n in config.n_labels) if folds > 1 else 0
    pending, work = 0, GridWork(n_test=held_out or len(split.indices(config.score_split)))
    n_features = len(split.indices("labelled")) + (0 if folds > 1 else work.n_test)
    for n_labels, seed, init, mode in grid.runs:
        n = len(balanced_subset(split, n_labels, seed, config.labelled_sets))
        if epochs_done.get((init, mode, seed, n)) == config.epochs:
            continue
        pending += 1
        if mode == "frozen":
            key = (init,) if init == "byol" else (init, seed)
            own_set = n if config.labelled_sets == "per-seed" and seed else 0  # beside the split's labelled
            if init == "random" and config.bn_images and key not in work.feature_passes:
                # recalibrating, then both backbones' features of the validation split and the labelled
                own_set += (
                    config.bn_images + len(split.indices("labelled")) + 2 * len(split.indices("validation"))
                )
            work.feature_passes[key] = work.feature_passes.get(key, n_features) + own_set
            continue
        if folds > 1:  # each fold trains on the rest, its rate chosen on them
            n_train = cv_training_size(n, folds)
            work.finetune_runs += [n_train] * folds
            if len(config.finetune_lrs) > 1:
                work.choices.update({(init, n, seed, fold): n_train for fold in range(folds)})
            continue
        work.finetune_runs.append(n)
        key = finetune_choice_key(config, init, n, seed)
        if len(config.finetune_lrs) > 1 and key not in grid.finetune_lrs:
            work.choices[key] = n
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
    rates = len(config.finetune_lrs)
    cv = f", {len(work.choices)} fine-tuning rate choices ({rates} rates x {config.finetune_folds} folds)"
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


def finished_rows(
    config: ClassifierConfig, out_dir: Path, byol_config: dict, world_size: int, splits_sha256: str
) -> list[dict]:
    """--resume: the metrics rows of the earlier run in `out_dir` that this one keeps.

    Refused (one line) when the earlier run trained on another split or another byol.pt, or with
    another setting or number of processes; a change of the frozen-only settings keeps the
    fine-tuning runs only. A random-init-only run (no byol.pt needed) resumes with --inits
    random,byol: its rows are kept and the BYOL runs added, so the random half of a study can train
    while the pretraining still runs.
    """
    metrics_path, config_path = out_dir / CLASSIFIER_METRICS_FILE, out_dir / CLASSIFIER_CONFIG_FILE
    if not (metrics_path.is_file() and config_path.is_file()):
        return []
    settings = {
        key: value
        for key, value in asdict(config).items()
        if key not in ("inits", "modes", "seeds", "n_labels")
    }
    settings["world_size"] = world_size  # with batch_size, fixes the global batch
    previous = read_json(config_path, "start over with --overwrite")
    if previous.get("splits_sha256", splits_sha256) != splits_sha256:  # files before 2026-12-05 lack it
        raise UserError(
            f"--resume: {metrics_path} was trained on another split (splits.csv's sha256 differs); "
            "start over with --overwrite"
        )
    if (previous.get("byol_config") or byol_config) != byol_config:  # {}: no BYOL runs before
        raise UserError(
            f"--resume: {metrics_path} was trained on another pretraining (byol.pt's settings differ); "
            "start over with --overwrite"
        )
    remedy = "resume with the same settings, or start over with --overwrite"
    changed = check_resumable(metrics_path, previous, settings, remedy, frozen_only_settings(config))
    rows = read_csv(metrics_path, CLASSIFIER_METRIC_COLUMNS, "start over with --overwrite").to_dict("records")
    if changed:  # only the linear probes' settings: keep the fine-tuning runs, retrain the probes
        rows = [row for row in rows if row["mode"] != "frozen"]
    return rows


def load_grid(
    config: ClassifierConfig, out_dir: Path, runtime: Runtime, resume: bool
) -> tuple[Grid, dict, list[dict]]:
    """The grid's shared inputs, byol.pt's config ({} without one) and, with `resume`, the earlier
    run's rows to keep: all checked before the image cache is read or built, and anything trains."""
    split = read_split(out_dir)
    byol_state, byol_config = None, {}
    if "byol" in config.inits:
        byol_backbone, byol_config = load_byol_backbone(out_dir)
        byol_state = byol_backbone.state_dict()
    config = config.resolved(byol_config)
    if config.evaluation == "auto":
        config = replace(config, evaluation="test" if split.indices(config.score_split) else "cv")
    if config.evaluation == "test" and not split.indices(config.score_split):
        flag = "--n-test" if config.score_split == "test" else "--n-validation"
        raise UserError(
            f"the split has no {config.score_split} images to score on; re-run data_split.py with {flag} "
            "above 0, or pass --evaluation cv"
        )
    world_size = runtime.ranks.world_size
    check_labelled(split, config, world_size)
    rows = finished_rows(config, out_dir, byol_config, world_size, split.fingerprint) if resume else []
    images = load_cache(split, out_dir, config.cache_size, torch.device("cpu"), runtime.ranks)
    labels = torch.tensor(split.table["label"].to_numpy())
    return Grid(config, split, images, labels, byol_state, runtime), byol_config, rows


def _run_classifiers(config: ClassifierConfig, out_dir: Path, runtime: Runtime, resume: bool) -> pd.DataFrame:
    grid, byol_config, rows = load_grid(config, out_dir, runtime, resume)
    config, ranks = grid.config, runtime.ranks
    metrics_path = out_dir / CLASSIFIER_METRICS_FILE
    if ranks.is_main:
        settings = {
            "device": str(runtime.device),
            "precision": runtime.precision,
            "world_size": ranks.world_size,
            "splits_sha256": grid.split.fingerprint,
        }
        write_json(
            out_dir / CLASSIFIER_CONFIG_FILE, {**asdict(config), **settings, "byol_config": byol_config}
        )
    epochs_done: dict[RunKey, int] = {}
    for row in rows:
        key = (row["init"], row["mode"], row["seed"], row["n_labels"])
        epochs_done[key] = epochs_done.get(key, 0) + 1
    for row in rows:
        if row["mode"] == "finetune":
            key = finetune_choice_key(config, row["init"], row["n_labels"], row["seed"])
            grid.finetune_lrs[key] = row["backbone_lr"]
    log.info(plan_line(grid, epochs_done))
    finished = {
        prediction_column(*key[:2], key[3], key[2])
        for key, done in epochs_done.items()
        if done == config.epochs
    }
    predicted = kept_predictions(out_dir, finished) if rows else {}
    progress = tqdm(grid.runs, desc="classifiers", unit="run", disable=not ranks.is_main)
    for run in progress:
        n_labels, seed, init, mode = run
        train_rows = balanced_subset(grid.split, n_labels, seed, config.labelled_sets)  # drawn once per run
        key = (init, mode, seed, len(train_rows))
        if epochs_done.get(key) == config.epochs:
            continue
        rows = [row for row in rows if (row["init"], row["mode"], row["seed"], row["n_labels"]) != key]
        progress.set_description(f"{init} {mode} seed {seed} n={key[3]}")
        new_rows = grid.train(run, train_rows, progress)
        predicted[prediction_column(init, mode, key[3], seed)] = new_rows[-1].pop(PREDICTIONS_KEY)
        rows.extend(new_rows)
        if ranks.is_main:
            write_csv(metrics_path, pd.DataFrame(rows, columns=CLASSIFIER_METRIC_COLUMNS))
            write_csv(out_dir / PREDICTIONS_FILE, grid.predictions(predicted))
    progress.close()
    metrics = pd.DataFrame(rows, columns=CLASSIFIER_METRIC_COLUMNS)
    summary = summarize(metrics, rate_limits(asdict(config)))
    if ranks.is_main:
        write_csv(out_dir / CLASSIFIER_SUMMARY_FILE, summary)
        write_csv(out_dir / PAIRED_FILE, paired_summary(metrics, grid.predictions(predicted)))
    return summary


def kept_predictions(out_dir: Path, finished: set[str]) -> dict[str, dict[int, int]]:
    """--resume: the earlier classifier_predictions.csv's columns of the runs kept (`finished`, trained
    on the same split: finished_rows checked), as {cache row: predicted class}; {} without one (a study
    from before the file: no bootstrap for those runs)."""
    path = out_dir / PREDICTIONS_FILE
    if not path.is_file():
        return {}
    table = read_csv(path, PREDICTION_INDEX, "start over with --overwrite")
    return {
        column: {int(row): int(value) for row, value in zip(table["row"], table[column]) if value == value}
        for column in table.columns
        if column in finished
    }


def format_summary(summary: pd.DataFrame, paired: pd.DataFrame | None = None) -> str:
    """One line per condition: init, mode, labels, test accuracy mean +- std over seeds; then BYOL −
    random per mode and label count, paired over seeds, with the wider of its two 95 % intervals and
    what to call it."""
    lines = []
    for row in summary.itertuples():
        accuracy = mean_and_std(row.test_acc_mean, row.test_acc_std)
        lines.append(
            f"{row.init:>6} {row.mode:>8}  n={row.n_labels:<4} test_acc {accuracy}  "
            f"({row.seeds} seed{'s' * (row.seeds > 1)}, {row.epochs} epochs)"
        )
    for row in [] if paired is None else paired.itertuples():
        difference = paired_text(row.diff_mean, row.low, row.high)
        lines.append(
            f"BYOL - random {row.mode:>8}  n={row.n_labels:<4} {difference}  {row.verdict} "
            f"({row.seeds} paired seed{'s' * (row.seeds > 1)})"
        )
    return "\n".join(lines)
