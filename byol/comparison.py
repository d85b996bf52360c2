"""The comparison grid: {random, byol} x {finetune, frozen} x seeds x label counts, and its summary.

Writes classifier_metrics.csv (one row per run and epoch), classifier_summary.csv (final test accuracy
mean and std over seeds per condition) and classifier_config.json; resumes by skipping completed runs.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from byol.cache import load_cache
from byol.cv_folds import pool_folds, stratified_folds
from byol.data import Split, read_split
from byol.device import resolve_precision
from byol.distributed import Runtime, process_group
from byol.errors import UserError
from byol.evaluate import extract_features, recalibrate_batchnorm
from byol.files import write_csv, write_json
from byol.finetune import (
    PREDICTIONS_KEY,
    ClassifierConfig,
    Examples,
    Job,
    Task,
    choose_finetune,
    fine_tune,
    load_byol_backbone,
    make_backbone,
    train_probe,
)
from byol.grid_plan import RunKey, check_labelled, finetune_choice_key, plan_line, run_complete
from byol.grid_resume import finished_rows, kept_predictions
from byol.labelled_sets import balanced_subset, labelled_set_id
from byol.outputs import (
    CLASSIFIER_CONFIG_FILE,
    CLASSIFIER_METRIC_COLUMNS,
    CLASSIFIER_METRICS_FILE,
    CLASSIFIER_SUMMARY_FILE,
    PAIRED_FILE,
    PREDICTIONS_FILE,
    prediction_column,
)
from byol.resume import check_fresh_start
from byol.run_options import RunOptions
from byol.stats import paired_summary, predictions_table, rate_limits, summarize

log = logging.getLogger(__name__)


def run_classifiers(
    config: ClassifierConfig, out_dir: Path, options: RunOptions | None = None
) -> pd.DataFrame:
    """Train every condition, write classifier_metrics.csv and classifier_summary.csv, return the summary.

    With `options.resume`, conditions already complete in classifier_metrics.csv (same settings) are
    kept; an earlier classifier_metrics.csv needs `resume` or `overwrite` (start over). The split, image
    cache and byol.pt are read where `options` says (by default in `out_dir`).
    Under torchrun every process calls this; fine-tuning is data-parallel, rank 0 writes the files.
    """
    options = options or RunOptions()
    config.check()
    check_fresh_start(Path(out_dir), (CLASSIFIER_METRICS_FILE,), options.resume, options.overwrite)
    with process_group(options.device_name) as (ranks, device):
        runtime = Runtime(device, resolve_precision(options.precision_name, device), ranks)
        return _run_classifiers(config, Path(out_dir), runtime, options)


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
    # The fine-tuning rate and run length per (init, label count), or per (init, label count, seed)
    # with --cv-every-seed (finetune_choice_key): kept from the runs already complete, else chosen when
    # first needed.
    finetune_choices: dict[tuple, tuple[float, int]] = field(default_factory=dict)
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

    def finetune_choice(
        self, init: str, n_labels: int, n_train: int, seed: int, progress: tqdm
    ) -> tuple[float, int]:
        """The backbone rate and epochs of a fine-tuning run on `n_train` images (the balanced subset
        drawn for `n_labels`): chosen once per finetune_choice_key, on seed 0's labelled images (each
        seed's with --cv-every-seed)."""
        config = self.config
        choice = finetune_choice_key(config, init, n_train, seed)
        if choice not in self.finetune_choices:
            cv_seed = seed if config.cv_every_seed else 0
            cv_images = self.examples(balanced_subset(self.split, n_labels, cv_seed, config.labelled_sets))
            job = Job(cv_seed, config, self.runtime, progress)
            self.finetune_choices[choice] = choose_finetune(
                init, self.byol_state, cv_images, self.n_classes, job
            )
        return self.finetune_choices[choice]

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
            twin = copy.deepcopy(backbone).to(runtime.device, memory_format=runtime.memory_format)
            self.recalibrated[seed] = recalibrate_batchnorm(
                twin, self.images, rows, config.image_size, runtime
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
        self, run: tuple, train_rows: list[int], scored_rows: list[int], choice: tuple | None, progress: tqdm
    ) -> tuple[list[dict], bool]:
        """One classifier trained on cache rows `train_rows` and scored on `scored_rows` (fine-tuned at
        the backbone rate and for the epochs of `choice`): its metrics rows, the last with the predicted
        classes, and whether its frozen random backbone had its BatchNorm statistics recalibrated."""
        n_labels, seed, init, mode = run
        config = self.config
        if mode == "finetune":
            lr, epochs = choice
            config = replace(config, finetune_lrs=[lr], epochs=epochs)
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
            held_rows = set(scored)
            kept = [row for row in train_rows if row not in held_rows]
            choice = None
            if mode == "finetune":
                job = Job(seed, config, self.runtime, progress)
                choice = choose_finetune(init, self.byol_state, self.examples(kept), self.n_classes, job)
            rows, fold_recalibrated = self.fit(run, kept, scored, choice, progress)
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
            choice = (
                self.finetune_choice(init, n_labels, len(train_rows), seed, progress)
                if mode == "finetune"
                else None
            )
            scored = self.split.indices(self.config.score_split)
            rows, recalibrated = self.fit(run, train_rows, scored, choice, progress)
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


def load_grid(
    config: ClassifierConfig, out_dir: Path, runtime: Runtime, options: RunOptions
) -> tuple[Grid, dict, list[dict]]:
    """The grid's shared inputs, byol.pt's config ({} without one) and, with `options.resume`, the
    earlier run's rows to keep: all checked before the image cache is read or built, and anything trains."""
    split = read_split(options.split_path(out_dir))
    byol_state, byol_config = None, {}
    if "byol" in config.inits:
        weights = options.weights_path(out_dir)
        byol_backbone, byol_config, pretrained_on = load_byol_backbone(weights)
        if not options.pretrained_elsewhere:
            check_pretrained_on(weights, pretrained_on, split)
        byol_state = byol_backbone.state_dict()
    config = config.resolved(byol_config)
    if config.evaluation == "auto":  # --score-split validation asks for a split: never cv in its place
        scored = config.score_split != "test" or split.indices("test")
        config = replace(config, evaluation="test" if scored else "cv")
    if config.evaluation == "test" and not split.indices(config.score_split):
        flag, instead = (
            ("--n-test", "pass --evaluation cv")
            if config.score_split == "test"
            else ("--n-validation", "leave out --score-split to cross-validate")
        )
        raise UserError(
            f"the split has no {config.score_split} images to score on; re-run data_split.py with {flag} "
            f"above 0, or {instead}"
        )
    world_size = runtime.ranks.world_size
    check_labelled(split, config, world_size)
    rows = (
        finished_rows(config, out_dir, byol_config, world_size, split.fingerprint) if options.resume else []
    )
    images = load_cache(
        split, options.cache_path(out_dir), config.cache_size, torch.device("cpu"), runtime.ranks
    )
    labels = torch.tensor(split.table["label"].to_numpy())
    return Grid(config, split, images, labels, byol_state, runtime), byol_config, rows


def check_pretrained_on(weights: Path, held_out: str | None, split: Split) -> None:
    """byol.pt must come from a pretraining that held out the same validation and test images as this
    split (Split.held_out_fingerprint, where the file records one): another split's pretraining pool
    may hold this split's validation or test images."""
    if held_out is not None and held_out != split.held_out_fingerprint():
        raise UserError(
            f"{weights} was pretrained on a split that held out other validation/test images than this "
            "one, so its pretraining images may include this split's test images; pass the split it was "
            "pretrained on (--split), pretrain on this one, or, if none of this split's images were in "
            "its pretraining, say so with --pretrained-elsewhere"
        )


def _run_classifiers(
    config: ClassifierConfig, out_dir: Path, runtime: Runtime, options: RunOptions
) -> pd.DataFrame:
    grid, byol_config, rows = load_grid(config, out_dir, runtime, options)
    config, ranks = grid.config, runtime.ranks
    metrics_path = out_dir / CLASSIFIER_METRICS_FILE
    if ranks.is_main:
        settings = {
            "device": str(runtime.device),
            "precision": runtime.precision,
            "world_size": ranks.world_size,
            "splits_sha256": grid.split.fingerprint,
            **({"pretrained_elsewhere": True} if options.pretrained_elsewhere else {}),
        }
        write_json(
            out_dir / CLASSIFIER_CONFIG_FILE, {**asdict(config), **settings, "byol_config": byol_config}
        )
    epochs_done: dict[RunKey, int] = {}
    for row in rows:
        key = (row["init"], row["mode"], row["seed"], row["n_labels"])
        epochs_done[key] = epochs_done.get(key, 0) + 1
    for row in rows:  # a run's rows are written once it is complete: its rate, and its length
        if row["mode"] == "finetune":
            key = finetune_choice_key(config, row["init"], row["n_labels"], row["seed"])
            done = epochs_done[(row["init"], row["mode"], row["seed"], row["n_labels"])]
            grid.finetune_choices[key] = (row["backbone_lr"], done)
    log.info(plan_line(grid, epochs_done))
    finished = {
        prediction_column(*key[:2], key[3], key[2])
        for key, done in epochs_done.items()
        if run_complete(key, done, config)
    }
    predicted = kept_predictions(out_dir, finished) if rows else {}
    pending = []
    for run in grid.runs:
        n_labels, seed, init, mode = run
        train_rows = balanced_subset(grid.split, n_labels, seed, config.labelled_sets)  # drawn once per run
        key = (init, mode, seed, len(train_rows))
        if not run_complete(key, epochs_done.get(key, 0), config):
            pending.append((run, train_rows, key))
    # Finished runs count as done from the start, so the bar's rate and ETA are those of the runs left.
    done = len(grid.runs) - len(pending)
    progress = tqdm(
        pending, desc="classifiers", unit="run", initial=done, total=len(grid.runs), disable=not ranks.is_main
    )
    for run, train_rows, key in progress:
        init, mode, seed = key[:3]
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
