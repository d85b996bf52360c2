"""The BYOL pretraining loop: plain PyTorch, top to bottom, with exact checkpoint and resume.

Reads the split and its image cache from `out_dir`, trains on the unlabelled and labelled images
(labels ignored, validation and test never seen), and writes byol.pt, byol_metrics.csv, byol_config.json and a
resume checkpoint. Randomness comes from generators seeded by (seed, epoch) and saved in the
checkpoint, so a run stopped anywhere and resumed gives the same weights as one that never stopped.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from byol.augment import BYOLViews
from byol.budget import fix_epochs, measure_speed, monitored_after, plan_line
from byol.cache import load_cache
from byol.capacity import check_cpu_memory
from byol.checkpoint import (
    CHECKPOINT_FILE,
    TrainState,
    check_same_split,
    read_checkpoint,
    restore,
    save_checkpoint,
    save_weights,
    summarize_pretraining,
)
from byol.data import Split, read_split
from byol.device import MEMORY_FORMAT, grad_scaler, resolve_precision
from byol.distributed import Ranks, Runtime, average_buffers, process_group, sync_batchnorm, wrap
from byol.errors import Stopped, UserError
from byol.evaluate import NOT_MONITORED, MonitorRows, describe_monitor, knn_monitor, monitor_rows
from byol.files import write_csv, write_json
from byol.model import BYOL, RESNET18_FEATURES, resnet18_backbone
from byol.optim import make_optimizer
from byol.outputs import BYOL_CONFIG_FILE, BYOL_METRIC_COLUMNS, BYOL_METRICS_FILE
from byol.plots import plot_views
from byol.pretrain_config import (
    COMPILE_MODES,
    PretrainConfig,
    parse_snapshot_epochs,
    snapshot_path,
    use_compile,
    view_size_at,
    view_sizes,
)
from byol.resume import StopRequest, check_fresh_start, check_resume_config
from byol.run_options import WEIGHTS_FILE, RunOptions
from byol.schedules import lr_at, tau_at
from byol.step import Trainer, seeded_generator, step_views, train_step

log = logging.getLogger(__name__)

VIEWS_FIGURE = "byol_views.png"
# What an earlier pretraining left in a folder: a new run there needs --resume or --overwrite.
EARLIER_RUN_FILES = (CHECKPOINT_FILE, WEIGHTS_FILE, BYOL_METRICS_FILE, BYOL_CONFIG_FILE)
CHECKPOINT_EVERY_S = 600  # also save mid-epoch, so a killed session loses at most 10 minutes


def pretraining_indices(split: Split, max_images: int, seed: int) -> list[int]:
    """Cache rows BYOL trains on: unlabelled + labelled (labels unused), never validation or test."""
    indices = split.indices("unlabelled", "labelled")
    if max_images and max_images < len(indices):
        order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
        indices = sorted(indices[i] for i in order[:max_images].tolist())
    return indices


def pretrain(config: PretrainConfig, out_dir: Path, options: RunOptions | None = None) -> BYOL:
    """Run (or resume) BYOL pretraining and return the trained model.

    Under torchrun each process calls this; they train one model together (see byol.distributed).
    """
    options = options or RunOptions()
    out_dir = Path(out_dir)
    if options.compile_mode not in COMPILE_MODES:
        raise UserError(f"--compile {options.compile_mode!r}: use one of {', '.join(COMPILE_MODES)}")
    check_fresh_start(out_dir, EARLIER_RUN_FILES, options.resume, options.overwrite)
    with process_group(options.device_name) as (ranks, device):
        checkpoint = read_checkpoint(out_dir / CHECKPOINT_FILE, ranks) if options.resume else None
        if checkpoint is not None:
            config = check_resume_config(out_dir / CHECKPOINT_FILE, checkpoint["config"], config)
        budgeted = bool(options.time_budget_s) and checkpoint is None
        config = config.resolved(ranks.world_size)
        # fail before the cache is built
        parse_snapshot_epochs(options.snapshot_epochs, 10**9 if budgeted else config.epochs)
        run = build_run(config, out_dir, ranks, device, options, checkpoint)
        state = restore(run, checkpoint) if checkpoint is not None else TrainState()
        steps_left = None if budgeted else run.total_steps - state.step
        speed = measure_speed(run, steps_left) if steps_left != 0 else None  # none: a finished run
        fix_epochs(run, speed, options.time_budget_s, resumed=checkpoint is not None)
        if use_compile(options.compile_mode, device, run.total_steps - state.step):
            run.train_model = torch.compile(run.train_model)
        recorded = {"time_budget_s": options.time_budget_s, "setting": options.setting}
        start_run(run, state, show_views=not options.resume, recorded=recorded)
        log.info(plan_line(run, state, speed))
        train_epochs(run, state, parse_snapshot_epochs(options.snapshot_epochs, run.config.epochs), options)
        if ranks.is_main:
            path = save_weights(run, state, out_dir / WEIGHTS_FILE)
            log.info(f"wrote {path}: {json.dumps(summarize_pretraining(state.metrics))}")
        return run.model


def train_epochs(run: Run, state: TrainState, snapshots: set[int], options: RunOptions) -> None:
    """The epochs left, under one progress bar over every step of the run; Stopped on a signal, or
    after every options.stop_after_epochs epochs."""
    bar = tqdm(
        total=run.total_steps,
        initial=state.step,
        unit="step",
        dynamic_ncols=True,
        disable=not run.ranks.is_main,
    )
    every = options.stop_after_epochs
    with StopRequest() as stop, bar:
        while state.epoch < run.config.epochs:
            first_batch = state.batch_in_epoch
            seconds = train_one_epoch(run, state, stop, bar)
            end_epoch(run, state, first_batch, seconds, snapshots)
            if every and state.epoch < run.config.epochs and state.epoch % every == 0:
                raise Stopped(
                    f"paused after epoch {state.epoch} as asked (--stop-after-epochs); "
                    "continue with --resume",
                    0,
                )


@dataclass
class Run:
    """What a pretraining run builds once from its config: data, model, optimiser, and where it runs."""

    config: PretrainConfig
    out_dir: Path
    splits_sha256: str  # the split's fingerprint: recorded with the weights, checked on --resume
    held_out_sha256: str  # Split.held_out_fingerprint: recorded with the weights, checked by Stage 3
    ranks: Ranks
    device: torch.device
    precision: str
    train_indices: list[int]  # cache rows BYOL trains on (never validation or test)
    watched: MonitorRows
    images: torch.Tensor  # (N, 3, S, S) uint8, every cache row
    views: dict[int, BYOLViews]  # by view size: image_size's, and those of --progressive-sizes
    model: BYOL
    train_model: nn.Module  # `model`, or its DDP (and/or torch.compile) wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler

    @property
    def global_batch(self) -> int:
        return self.config.batch_size * self.ranks.world_size

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_indices) // self.global_batch  # the last partial batch is dropped

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        return int(self.config.warmup_fraction * self.total_steps)

    def views_at(self, step: int) -> BYOLViews:
        return self.views[view_size_at(self.config, step, self.total_steps)]

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_FILE

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.device, self.precision, self.ranks, MEMORY_FORMAT)

    @property
    def trainer(self) -> Trainer:
        return Trainer(self.train_model, self.model, self.optimizer, self.scaler, self.runtime)


def views_of_size(config: PretrainConfig, size: int) -> BYOLViews:
    """The run's two views at `size` px: the blur range, given in pixels of image_size's views, scaled
    to the size (image_size's own views are exactly the configured ones)."""
    scale = size / config.image_size
    return BYOLViews(
        size,
        crop_scale=(config.crop_min_scale, 1.0),
        blur_sigma=(config.blur_sigma_min * scale, config.blur_sigma_max * scale),
    )


# Six parameters: what to train and where, then the checkpoint a --resume continues (None: a new run),
# whose split is checked before the cache is built.
def build_run(
    config: PretrainConfig,
    out_dir: Path,
    ranks: Ranks,
    device: torch.device,
    options: RunOptions,
    checkpoint: dict | None = None,
) -> Run:
    """Check that the run fits, then load the split and its cache and build the model and optimiser."""
    precision = resolve_precision(options.precision_name, device)
    if device.type == "cpu":  # a CUDA allocation that fails raises, and run_stage reports it
        check_cpu_memory(config.batch_size, config.image_size, precision)
    split = read_split(options.split_path(out_dir))
    if checkpoint is not None:
        check_same_split(out_dir / CHECKPOINT_FILE, checkpoint, split.fingerprint)
    train_indices = pretraining_indices(split, config.max_images, config.seed)
    if config.batch_size * ranks.world_size > len(train_indices):
        processes = f" x {ranks.world_size} processes" if ranks.distributed else ""
        raise UserError(
            f"--batch-size {config.batch_size}{processes} is larger than the {len(train_indices)} "
            "pretraining images; lower --batch-size"
        )
    images = load_cache(split, options.cache_path(out_dir), config.cache_size, device, ranks)
    views = {size: views_of_size(config, size) for size in view_sizes(config)}
    torch.manual_seed(config.seed)
    model = BYOL(resnet18_backbone(), RESNET18_FEATURES)
    if config.sync_bn and ranks.distributed:
        model = sync_batchnorm(model, device)
    model = model.to(device, memory_format=MEMORY_FORMAT)
    optimizer = make_optimizer(config, model)
    return Run(
        config=config,
        out_dir=out_dir,
        splits_sha256=split.fingerprint,
        held_out_sha256=split.held_out_fingerprint(),
        ranks=ranks,
        device=device,
        precision=precision,
        train_indices=train_indices,
        watched=monitor_rows(split, config.diag_voters),
        images=images,
        views=views,
        model=model,
        train_model=wrap(model, ranks, device),
        optimizer=optimizer,
        scaler=grad_scaler(device, precision),
    )


def start_run(run: Run, state: TrainState, show_views: bool, recorded: dict | None = None) -> None:
    """Write the run's config, say what it is about to do, and score the random init (epoch 0)."""
    config, ranks = run.config, run.ranks
    if ranks.is_main:
        write_json(
            run.out_dir / BYOL_CONFIG_FILE,
            {
                **asdict(config),
                "device": str(run.device),
                "precision": run.precision,
                "world_size": ranks.world_size,
                "global_batch_size": run.global_batch,
                "pretraining_images": len(run.train_indices),
                "splits_sha256": run.splits_sha256,
                "held_out_sha256": run.held_out_sha256,
                **(recorded or {}),
            },
        )
    log.info(
        f"BYOL: {len(run.train_indices)} images, {run.steps_per_epoch} steps/epoch x {config.epochs} epochs, "
        f"global batch {run.global_batch} ({ranks.world_size} process(es)), {config.optimizer} lr "
        f"{config.lr:g}, device {run.device}, precision {run.precision}; k-NN monitor: "
        f"{len(run.watched.labelled)} labelled voters, {len(run.watched.voters)} diagnostic voters "
        f"(pretraining images with their labels) classifying {len(run.watched.validation)} validation images"
    )
    if ranks.is_main and show_views:  # what the network is about to see, to check the views by eye
        # Spread over the training rows: they follow the split's order, so the first few are one class.
        rows = run.train_indices
        shown = [rows[i] for i in torch.linspace(0, len(rows) - 1, 6).long().tolist()]
        generator = torch.Generator().manual_seed(config.seed)
        plot_views(run.images[shown], run.views[config.image_size], generator, run.out_dir / VIEWS_FIGURE)
    if not state.metrics:  # epoch 0: the random-init baseline of the k-NN monitor
        monitored = monitor(run)
        state.metrics.append(metrics_row(run, state, monitored, math.nan, math.nan, 0.0))
        log.info(f"epoch 0: {describe_monitor(monitored)}")


def monitor(run: Run) -> dict[str, float]:
    """The k-NN monitor on rank 0 only (the others wait): every rank's backbone is the same."""
    result = NOT_MONITORED
    if run.ranks.is_main:
        result = knn_monitor(run.model.backbone, run.images, run.watched, run.config.image_size, run.runtime)
    run.ranks.barrier()
    return result


def train_one_epoch(run: Run, state: TrainState, stop: StopRequest, bar: tqdm) -> float:
    """Train from `state.batch_in_epoch` to the end of epoch `state.epoch`, advancing the run's one
    progress bar (all steps, with the ETA of the whole run); returns the seconds taken.

    Checkpoints every CHECKPOINT_EVERY_S and when a signal asks to stop (then raises Stopped).
    """
    config, ranks = run.config, run.ranks
    permutation = torch.randperm(
        len(run.train_indices), generator=seeded_generator(config.seed, state.epoch, "cpu")
    )
    epoch_rows = torch.tensor(run.train_indices)[permutation]
    generator = seeded_generator(config.seed, state.epoch, run.device)
    if state.generator_state is not None:  # resuming mid-epoch: replay the same augmentations
        generator.set_state(state.generator_state)
        state.generator_state = None
    started = last_save = time.perf_counter()
    first_batch = state.batch_in_epoch
    nan_remedy = "Lower --lr and start again"
    if run.precision == "fp16":  # its activations overflow at 65,504
        nan_remedy = "Lower --lr, or train in --precision fp32 or bf16, and start again"
    bar.set_description(f"BYOL epoch {state.epoch + 1}/{config.epochs}")
    for batch in range(first_batch, run.steps_per_epoch):
        global_rows = epoch_rows[batch * run.global_batch : (batch + 1) * run.global_batch]
        views = run.views_at(state.step)
        view_1, view_2 = step_views(run.images, global_rows, views, generator, run.runtime)
        lr = lr_at(state.step, run.total_steps, run.warmup_steps, config.lr)
        loss = train_step(
            run.trainer, view_1, view_2, lr, tau_at(state.step, run.total_steps, config.tau_base)
        )
        state.step += 1
        # One small all-reduce per step: the mean loss over ranks, and whether any rank was asked to
        # stop, so that every rank stops (or fails) at the same step.
        stop_flag = loss.new_tensor(float(bool(stop.signal_name)))
        shared = ranks.all_reduce_sum(torch.stack([loss.float() / ranks.world_size, stop_flag])).tolist()
        loss_value, stop_asked = shared[0], shared[1] > 0
        if not math.isfinite(loss_value):
            raise UserError(
                f"the loss became {loss_value} at epoch {state.epoch + 1}, step {state.step}; "
                f"stopped, the last good checkpoint {run.checkpoint_path} is kept. {nan_remedy}"
            )
        state.loss_sum += loss_value
        state.batch_in_epoch = batch + 1
        images_per_s = (batch + 1 - first_batch) * run.global_batch / (time.perf_counter() - started)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", images_per_s=f"{images_per_s:.1f}", refresh=False)
        if stop_asked or (ranks.is_main and time.perf_counter() - last_save > CHECKPOINT_EVERY_S):
            spent = state.epoch_seconds
            state.generator_state = generator.get_state()
            state.epoch_seconds += time.perf_counter() - started  # a resumed epoch counts both parts
            save_checkpoint(run, state)
            state.generator_state, state.epoch_seconds = None, spent
            last_save = time.perf_counter()
            if stop_asked:
                raise Stopped(
                    f"stopped by {stop.signal_name or 'a signal to another process'}; checkpoint "
                    f"saved in {run.checkpoint_path}, continue with --resume",
                    stop.exit_code or 143,
                )
    return time.perf_counter() - started


# Six parameters: where the run stands, then the row's measured values, which no other object holds.
def metrics_row(
    run: Run, state: TrainState, monitored: dict, loss: float, images_per_s: float, seconds: float
) -> dict:
    """byol_metrics.csv's row (BYOL_METRIC_COLUMNS, in order) after `state.epoch` epochs (0: the
    random init, before any step): the schedules' values at the step reached, and the monitor's."""
    config, step = run.config, state.step
    values = {
        "epoch": state.epoch,
        "step": step,
        "loss": loss,
        "tau": tau_at(step, run.total_steps, config.tau_base) if step else config.tau_base,
        "lr": lr_at(step - 1, run.total_steps, run.warmup_steps, config.lr) if step else 0.0,
        **monitored,
        "images_per_s": images_per_s,
        "seconds": seconds,
    }
    return {column: values[column] for column in BYOL_METRIC_COLUMNS}


def end_epoch(run: Run, state: TrainState, first_batch: int, seconds: float, snapshots: set[int]) -> None:
    """After an epoch's last step: BatchNorm buffers, monitor, metrics row, snapshot, checkpoint, CSV."""
    config = run.config
    average_buffers(run.model, run.ranks)
    state.epoch += 1
    monitored = NOT_MONITORED
    if monitored_after(config, state.epoch):
        monitored = monitor(run)
    images_per_s = (run.steps_per_epoch - first_batch) * run.global_batch / seconds
    loss = state.loss_sum / run.steps_per_epoch
    # the seconds with the part before a resume
    row = metrics_row(run, state, monitored, loss, images_per_s, state.epoch_seconds + seconds)
    state.metrics.append(row)
    log.info(
        f"epoch {state.epoch}: loss {row['loss']:.4f} {describe_monitor(monitored)} "
        f"{row['images_per_s']:.1f} images/s"
    )
    state.batch_in_epoch, state.loss_sum, state.epoch_seconds = 0, 0.0, 0.0
    if run.ranks.is_main and state.epoch in snapshots:
        save_weights(run, state, snapshot_path(run.out_dir, state.epoch))
    save_checkpoint(run, state)
    if run.ranks.is_main:
        write_csv(run.out_dir / BYOL_METRICS_FILE, pd.DataFrame(state.metrics))
