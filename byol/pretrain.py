"""The BYOL pretraining loop: plain PyTorch, top to bottom, with exact checkpoint and resume.

Reads the split and its image cache from `out_dir`, trains on the unlabelled and labelled images
(labels ignored, test never seen), and writes byol.pt, byol_metrics.csv, byol_config.json and a
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
import torch.nn.functional as F
from tqdm import tqdm

from byol.augment import BYOLViews
from byol.cache import check_view_size, default_cache_size, load_cache
from byol.capacity import check_cpu_memory
from byol.data import Split, read_split
from byol.device import MEMORY_FORMAT, grad_scaler, resolve_precision
from byol.distributed import Ranks, average_buffers, process_group, sync_batchnorm, wrap
from byol.errors import Stopped, UserError
from byol.evaluate import diagnostic_voters, effective_rank, extract_features, knn_accuracy
from byol.files import load_torch, save_torch, write_csv, write_json
from byol.model import BYOL, MIN_BATCH_SIZE, MIN_BATCH_SIZE_REASON, RESNET18_FEATURES, resnet18_backbone
from byol.optim import OPTIMIZERS, default_lr, make_optimizer
from byol.plots import plot_views
from byol.resume import StopRequest, check_fresh_start, check_resume_config
from byol.schedules import lr_at, tau_at
from byol.step import seeded_generator, step_views, train_step

log = logging.getLogger(__name__)

WEIGHTS_FILE = "byol.pt"
CHECKPOINT_FILE = "byol_checkpoint.pt"
# What --resume reads from the checkpoint (world_size and grad_scaler are absent from the oldest ones).
CHECKPOINT_KEYS = {
    "model",
    "optimizer",
    "config",
    "epoch",
    "batch_in_epoch",
    "step",
    "metrics",
    "loss_sum",
    "generator_state",
}
BYOL_METRICS_FILE = "byol_metrics.csv"
BYOL_CONFIG_FILE = "byol_config.json"
VIEWS_FIGURE = "byol_views.png"
CHECKPOINT_EVERY_S = 600  # also save mid-epoch, so a killed session loses at most 10 minutes


@dataclass
class PretrainConfig:
    """Everything that determines the result of a pretraining run (saved, and checked on --resume)."""

    epochs: int = 100
    batch_size: int = 256  # per process; the global batch is batch_size x world size
    image_size: int = 150
    cache_size: int = 0  # 0: default_cache_size(image_size)
    optimizer: str = "lars"
    lr: float = 0.0  # 0: BASE_LR_PER_256[optimizer] * batch_size / 256
    weight_decay: float = 1.5e-6
    lars_trust: float = 1e-3  # LARS's eta: each weight tensor moves by about lr x eta x its norm per step
    warmup_fraction: float = 0.1
    tau_base: float = 0.996
    crop_min_scale: float = 0.08
    blur_sigma_min: float = 0.1  # Gaussian blur sigma range in pixels of the view (the paper's, at 224 px)
    blur_sigma_max: float = 2.0
    seed: int = 0
    knn_every: int = 1
    # The diagnostic k-NN's voters: this many non-test images with their folder labels (0: off).
    # Labels the low-label setting does not have, for ranking recipes only (evaluate.diagnostic_voters).
    diag_voters: int = 5000
    max_images: int = 0  # 0: all non-test images
    sync_bn: bool = False  # BatchNorm statistics over the global batch when several processes train

    def resolved(self, world_size: int = 1) -> PretrainConfig:
        """Fill in the sizes and rates left at 0 (the rate from the global batch) and check the rest."""
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"--optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if self.batch_size < MIN_BATCH_SIZE:
            raise UserError(f"--batch-size {self.batch_size}: {MIN_BATCH_SIZE_REASON}")
        if not 0 < self.crop_min_scale <= 1:
            raise UserError(f"--crop-min-scale {self.crop_min_scale}: must be in (0, 1]")
        if not 0 < self.blur_sigma_min <= self.blur_sigma_max:
            raise UserError(
                f"--blur-sigma-min {self.blur_sigma_min} / --blur-sigma-max {self.blur_sigma_max}: "
                "need 0 < min <= max"
            )
        if not self.lars_trust > 0:  # written so that nan fails too
            raise UserError(f"--lars-trust {self.lars_trust}: must be > 0")
        if not 0 <= self.warmup_fraction < 1:
            raise UserError(f"--warmup-fraction {self.warmup_fraction}: must be in [0, 1)")
        if not 0 <= self.tau_base <= 1:
            raise UserError(f"--tau-base {self.tau_base}: must be in [0, 1]")
        if not 0 <= self.seed < 2**32:  # seeded_generator's seed x 1,000,003 must fit in 64 bits
            raise UserError(f"--seed {self.seed}: use an integer from 0 to {2**32 - 1}")
        if self.optimizer != "lars" and self.lars_trust != PretrainConfig.lars_trust:
            raise UserError(f"--lars-trust applies to --optimizer lars only, not {self.optimizer}")
        cache_size = self.cache_size or default_cache_size(self.image_size)
        check_view_size(self.image_size, cache_size)
        lr = self.lr or default_lr(self.optimizer, self.batch_size * world_size)
        return PretrainConfig(**{**asdict(self), "cache_size": cache_size, "lr": lr})


def pretraining_indices(split: Split, max_images: int, seed: int) -> list[int]:
    """Cache rows BYOL trains on: unlabelled + labelled (labels unused), never test."""
    indices = split.indices("unlabelled", "labelled")
    if max_images and max_images < len(indices):
        order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
        indices = sorted(indices[i] for i in order[:max_images].tolist())
    return indices


# The monitor's columns of byol_metrics.csv, for an epoch it skips (--knn-every) or cannot score.
NOT_MONITORED = {
    "knn_acc": math.nan,
    "diag_knn_k20": math.nan,
    "diag_knn_k200": math.nan,
    "feature_std": math.nan,
    "feature_rank": math.nan,
    "monitor_seconds": math.nan,
}
DIAG_KS = (20, 200)  # the diagnostic k-NN's neighbours: the usual k, and a smoother vote over many voters


@dataclass(frozen=True)
class MonitorRows:
    """The cache rows the monitor scores: the labelled voters, the test images and the diagnostic voters."""

    labelled: list[int]
    test: list[int]
    voters: list[int]  # diagnostic_voters: non-test images, labels the low-label setting lacks
    labels: torch.Tensor  # (N,) every cache row's folder label


def monitor_rows(split: Split, diag_voters: int) -> MonitorRows:
    labels = torch.tensor(split.table["label"].to_numpy())
    voters = diagnostic_voters(split, diag_voters)
    return MonitorRows(split.indices("labelled"), split.indices("test"), voters, labels)


def knn_monitor(
    model: BYOL,
    images: torch.Tensor,
    rows: MonitorRows,
    image_size: int,
    device: torch.device,
    precision: str,
    fmt: torch.memory_format,
) -> dict[str, float]:
    """k-NN accuracy (labelled -> test, and diagnostic voters -> test), the per-dimension std of the
    normalised features, their effective rank, and the seconds all of it took.

    Two collapse alarms. The std is near 0 when all images map to one point, about 1/sqrt(D) when
    the features are spread. The effective rank falls when the features keep their spread but
    squeeze into a few directions (dimensional collapse), which a linear probe then cannot undo.
    Every image's features come from one pass, the voters' with the test images'.
    """
    if not rows.labelled or not rows.test:
        return NOT_MONITORED
    started = time.perf_counter()
    unique = list(dict.fromkeys(rows.labelled + rows.test + rows.voters))
    position = {row: i for i, row in enumerate(unique)}
    features = extract_features(
        model.backbone, images, unique, image_size, device, precision, memory_format=fmt
    )
    features = features.cpu()

    def of(subset: list[int]) -> torch.Tensor:
        return features[[position[row] for row in subset]]

    test_features, test_labels = of(rows.test), rows.labels[rows.test]
    result = dict(NOT_MONITORED)
    result["knn_acc"] = knn_accuracy(
        of(rows.labelled), rows.labels[rows.labelled], test_features, test_labels
    )
    if rows.voters:
        voter_features, voter_labels = of(rows.voters), rows.labels[rows.voters]
        for k in DIAG_KS:
            result[f"diag_knn_k{k}"] = knn_accuracy(
                voter_features, voter_labels, test_features, test_labels, k=k
            )
    # The collapse alarms on the labelled and test images, as before the diagnostic voters existed.
    scored = features[: len(rows.labelled) + len(rows.test)]
    result["feature_std"] = F.normalize(scored, dim=1).std(dim=0).mean().item()
    result["feature_rank"] = effective_rank(scored)
    result["monitor_seconds"] = time.perf_counter() - started
    return result


def describe_monitor(monitored: dict[str, float]) -> str:
    return (
        f"knn_acc {monitored['knn_acc']:.4f} diag_knn_k20 {monitored['diag_knn_k20']:.4f} "
        f"diag_knn_k200 {monitored['diag_knn_k200']:.4f} feature_rank {monitored['feature_rank']:.1f}"
    )


def pretrain(
    config: PretrainConfig,
    out_dir: Path,
    device_name: str = "auto",
    precision_name: str = "auto",
    resume: bool = False,
    stop_after_epochs: int = 0,
    overwrite: bool = False,
) -> BYOL:
    """Run (or resume) BYOL pretraining and return the trained model.

    An earlier run in `out_dir` needs `resume` (continue it) or `overwrite` (start over).
    Under torchrun each process calls this; they train one model together (see byol.distributed).
    """
    check_fresh_start(Path(out_dir), (CHECKPOINT_FILE, WEIGHTS_FILE), resume, overwrite)
    with process_group(device_name) as (ranks, device):
        return _pretrain(config, Path(out_dir), ranks, device, precision_name, resume, stop_after_epochs)


def _pretrain(
    config: PretrainConfig,
    out_dir: Path,
    ranks: Ranks,
    device: torch.device,
    precision_name: str,
    resume: bool,
    stop_after_epochs: int,
) -> BYOL:
    checkpoint_path = out_dir / CHECKPOINT_FILE
    checkpoint = None
    if resume:
        if not checkpoint_path.is_file():
            raise UserError(f"--resume: no checkpoint {checkpoint_path}; run without --resume to start")
        checkpoint = load_torch(checkpoint_path, "start over with --overwrite")
        if not isinstance(checkpoint, dict) or not CHECKPOINT_KEYS <= checkpoint.keys():
            raise UserError(
                f"{checkpoint_path} is not a train_byol.py checkpoint; start over with --overwrite"
            )
        config = check_resume_config(checkpoint["config"], config)
        if checkpoint.get("world_size", 1) != ranks.world_size:
            raise UserError(
                f"--resume: the checkpoint was trained by {checkpoint.get('world_size', 1)} process(es), "
                f"this run has {ranks.world_size}; resume with the same number"
            )
    config = config.resolved(ranks.world_size)
    precision = resolve_precision(precision_name, device)
    if device.type == "cpu":  # a CUDA allocation that fails raises, and run_stage reports it
        check_cpu_memory(config.batch_size, config.image_size, precision)
    fmt = MEMORY_FORMAT
    nan_remedy = "Lower --lr and start again"
    if precision == "fp16":  # its activations overflow at 65,504
        nan_remedy = "Lower --lr, or train in --precision fp32 or bf16, and start again"

    split = read_split(out_dir)
    train_indices = pretraining_indices(split, config.max_images, config.seed)
    watched = monitor_rows(split, config.diag_voters)
    global_batch = config.batch_size * ranks.world_size
    if global_batch > len(train_indices):
        processes = f" x {ranks.world_size} processes" if ranks.distributed else ""
        raise UserError(
            f"--batch-size {config.batch_size}{processes} is larger than the {len(train_indices)} "
            "pretraining images; lower --batch-size"
        )
    images = load_cache(split, out_dir, config.cache_size, device, ranks)  # (N, 3, S, S) uint8
    steps_per_epoch = len(train_indices) // global_batch  # the last partial batch is dropped
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = int(config.warmup_fraction * total_steps)
    views = BYOLViews(
        config.image_size,
        crop_scale=(config.crop_min_scale, 1.0),
        blur_sigma=(config.blur_sigma_min, config.blur_sigma_max),
    )

    torch.manual_seed(config.seed)
    model = BYOL(resnet18_backbone(), RESNET18_FEATURES)
    if config.sync_bn and ranks.distributed:
        model = sync_batchnorm(model, device)
    model = model.to(device, memory_format=fmt)
    optimizer = make_optimizer(config.optimizer, model, config.lr, config.weight_decay, config.lars_trust)
    scaler = grad_scaler(device, precision)
    epoch, batch_in_epoch, step, metrics = 0, 0, 0, []
    generator_state, loss_sum = None, 0.0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scaler.is_enabled() and checkpoint.get("grad_scaler"):  # empty unless it was an fp16 run
            scaler.load_state_dict(checkpoint["grad_scaler"])
        epoch, batch_in_epoch, step = checkpoint["epoch"], checkpoint["batch_in_epoch"], checkpoint["step"]
        metrics, loss_sum = checkpoint["metrics"], checkpoint["loss_sum"]
        generator_state = checkpoint["generator_state"]
        log.info(f"resuming at epoch {epoch + 1}, batch {batch_in_epoch} of {steps_per_epoch}")
    train_model = wrap(model, ranks, device)
    if ranks.is_main:
        write_json(
            out_dir / BYOL_CONFIG_FILE,
            {
                **asdict(config),
                "device": str(device),
                "precision": precision,
                "world_size": ranks.world_size,
                "global_batch_size": global_batch,
                "pretraining_images": len(train_indices),
            },
        )
    log.info(
        f"BYOL: {len(train_indices)} images, {steps_per_epoch} steps/epoch x {config.epochs} epochs, "
        f"global batch {global_batch} ({ranks.world_size} process(es)), {config.optimizer} lr "
        f"{config.lr:g}, device {device}, precision {precision}; k-NN monitor: {len(watched.labelled)} "
        f"labelled voters, {len(watched.voters)} diagnostic voters (non-test images with their labels)"
    )

    def save_checkpoint(next_batch: int, generator_state: torch.Tensor | None) -> None:
        if not ranks.is_main:  # every rank holds the same state; one copy is enough
            return
        save_torch(
            checkpoint_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "grad_scaler": scaler.state_dict(),
                "config": asdict(config),
                "world_size": ranks.world_size,
                "epoch": epoch,
                "batch_in_epoch": next_batch,
                "step": step,
                "metrics": metrics,
                "loss_sum": loss_sum,
                "generator_state": generator_state,
            },
        )

    def monitor() -> dict[str, float]:
        """k-NN on rank 0 only (the others wait): every rank's backbone is the same."""
        result = NOT_MONITORED
        if ranks.is_main:
            result = knn_monitor(model, images, watched, config.image_size, device, precision, fmt)
        ranks.barrier()
        return result

    if ranks.is_main and not resume:  # what the network is about to see, to check the views by eye
        # Spread over the training rows: they follow the split's order, so the first few are one class.
        shown = [train_indices[i] for i in torch.linspace(0, len(train_indices) - 1, 6).long().tolist()]
        plot_views(
            images[shown],
            views,
            torch.Generator().manual_seed(config.seed),
            out_dir / VIEWS_FIGURE,
        )
    if not metrics:  # epoch 0: the random-init baseline of the k-NN monitor
        monitored = monitor()
        metrics.append(
            {
                "epoch": 0,
                "step": 0,
                "loss": math.nan,
                "tau": config.tau_base,
                "lr": 0.0,
                **monitored,
                "images_per_s": math.nan,
                "seconds": 0.0,
            }
        )
        log.info(f"epoch 0: {describe_monitor(monitored)}")

    with StopRequest() as stop:
        while epoch < config.epochs:
            permutation = torch.randperm(
                len(train_indices), generator=seeded_generator(config.seed, epoch, "cpu")
            )
            epoch_rows = torch.tensor(train_indices)[permutation]
            generator = seeded_generator(config.seed, epoch, device)
            if generator_state is not None:  # resuming mid-epoch: replay the same augmentations
                generator.set_state(generator_state)
                generator_state = None
            started = last_save = time.perf_counter()
            first_batch = batch_in_epoch
            bar = tqdm(
                range(first_batch, steps_per_epoch),
                desc=f"epoch {epoch + 1}/{config.epochs}",
                unit="step",
                leave=False,
                disable=not ranks.is_main,
            )
            for batch_in_epoch in bar:
                global_rows = epoch_rows[batch_in_epoch * global_batch : (batch_in_epoch + 1) * global_batch]
                view_1, view_2 = step_views(images, global_rows, views, generator, ranks, device, fmt)
                loss = train_step(
                    train_model,
                    model,
                    optimizer,
                    view_1,
                    view_2,
                    lr_at(step, total_steps, warmup_steps, config.lr),
                    tau_at(step, total_steps, config.tau_base),
                    device,
                    precision,
                    scaler,
                )
                step += 1
                # One small all-reduce per step: the mean loss over ranks, and whether any rank was
                # asked to stop, so that every rank stops (or fails) at the same step.
                shared = ranks.all_reduce_sum(
                    torch.stack(
                        [loss.float() / ranks.world_size, loss.new_tensor(float(bool(stop.signal_name)))]
                    )
                ).tolist()
                loss_value, stop_asked = shared[0], shared[1] > 0
                if not math.isfinite(loss_value):
                    raise UserError(
                        f"the loss became {loss_value} at epoch {epoch + 1}, step {step}; "
                        f"stopped, the last good checkpoint {checkpoint_path} is kept. {nan_remedy}"
                    )
                loss_sum += loss_value
                images_per_s = (
                    (batch_in_epoch + 1 - first_batch) * global_batch / (time.perf_counter() - started)
                )
                bar.set_postfix(loss=f"{loss_value:.3f}", images_per_s=f"{images_per_s:.1f}")
                if stop_asked or (ranks.is_main and time.perf_counter() - last_save > CHECKPOINT_EVERY_S):
                    save_checkpoint(batch_in_epoch + 1, generator.get_state())
                    last_save = time.perf_counter()
                    if stop_asked:
                        bar.close()
                        raise Stopped(
                            f"stopped by {stop.signal_name or 'a signal to another process'}; checkpoint "
                            f"saved in {checkpoint_path}, continue with --resume",
                            stop.exit_code or 143,
                        )
            bar.close()
            seconds = time.perf_counter() - started
            average_buffers(model, ranks)
            epoch += 1
            monitored = NOT_MONITORED
            if epoch == config.epochs or (config.knn_every and epoch % config.knn_every == 0):
                monitored = monitor()
            metrics.append(
                {
                    "epoch": epoch,
                    "step": step,
                    "loss": loss_sum / steps_per_epoch,
                    "tau": tau_at(step, total_steps, config.tau_base),
                    "lr": lr_at(step - 1, total_steps, warmup_steps, config.lr),
                    **monitored,
                    "images_per_s": (steps_per_epoch - first_batch) * global_batch / seconds,
                    "seconds": seconds,
                }
            )
            log.info(
                f"epoch {epoch}: loss {metrics[-1]['loss']:.4f} {describe_monitor(monitored)} "
                f"{metrics[-1]['images_per_s']:.1f} images/s"
            )
            batch_in_epoch, loss_sum = 0, 0.0
            save_checkpoint(0, None)
            if ranks.is_main:
                write_csv(out_dir / BYOL_METRICS_FILE, pd.DataFrame(metrics))
            if stop_after_epochs and epoch < config.epochs and epoch % stop_after_epochs == 0:
                raise Stopped(
                    f"paused after epoch {epoch} as asked (--stop-after-epochs); continue with --resume", 0
                )

    if ranks.is_main:
        summary = summarize_pretraining(metrics)
        save_torch(
            out_dir / WEIGHTS_FILE,
            {
                "backbone": model.backbone.state_dict(),
                "arch": "resnet18",
                "feature_dim": RESNET18_FEATURES,
                "config": asdict(config),
                "metrics": summary,
            },
        )
        log.info(f"wrote {out_dir / WEIGHTS_FILE}: {json.dumps(summary)}")
    return model


def summarize_pretraining(metrics: list[dict]) -> dict:
    knn = [row["knn_acc"] for row in metrics if not math.isnan(row["knn_acc"])]
    trained = [row for row in metrics if row["epoch"] > 0]
    return {
        "epochs": trained[-1]["epoch"] if trained else 0,
        "final_loss": trained[-1]["loss"] if trained else math.nan,
        "knn_acc_initial": knn[0] if knn else math.nan,
        "knn_acc_best": max(knn) if knn else math.nan,
        "knn_acc_final": knn[-1] if knn else math.nan,
        "images_per_s": sum(r["images_per_s"] for r in trained) / len(trained) if trained else math.nan,
        "seconds": sum(r["seconds"] for r in trained),
    }
