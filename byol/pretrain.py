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
import signal
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from byol.augment import BYOLViews
from byol.cache import default_cache_size, load_cache
from byol.data import Split, read_split
from byol.device import autocast, memory_format, resolve_device, resolve_precision
from byol.errors import Stopped, UserError
from byol.evaluate import extract_features, knn_accuracy
from byol.files import load_torch, save_torch, write_csv, write_json
from byol.model import BYOL, RESNET18_FEATURES, resnet18_backbone
from byol.optim import OPTIMIZERS, default_lr, make_optimizer
from byol.schedules import lr_at, tau_at

log = logging.getLogger(__name__)

WEIGHTS_FILE = "byol.pt"
CHECKPOINT_FILE = "byol_checkpoint.pt"
METRICS_FILE = "byol_metrics.csv"
CONFIG_FILE = "byol_config.json"
CHECKPOINT_EVERY_S = 600  # also save mid-epoch, so a killed session loses at most 10 minutes


@dataclass
class PretrainConfig:
    """Everything that determines the result of a pretraining run (saved, and checked on --resume)."""

    epochs: int = 100
    batch_size: int = 256
    image_size: int = 150
    cache_size: int = 0  # 0: default_cache_size(image_size)
    optimizer: str = "lars"
    lr: float = 0.0  # 0: BASE_LR_PER_256[optimizer] * batch_size / 256
    weight_decay: float = 1.5e-6
    warmup_fraction: float = 0.1
    tau_base: float = 0.996
    crop_min_scale: float = 0.08
    seed: int = 0
    knn_every: int = 1
    max_images: int = 0  # 0: all non-test images

    def resolved(self) -> PretrainConfig:
        """Fill in the sizes and rates left at 0 and check the rest."""
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"--optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if not 0 < self.crop_min_scale <= 1:
            raise UserError(f"--crop-min-scale {self.crop_min_scale}: must be in (0, 1]")
        if not 0 <= self.tau_base <= 1:
            raise UserError(f"--tau-base {self.tau_base}: must be in [0, 1]")
        cache_size = self.cache_size or default_cache_size(self.image_size)
        if self.image_size > cache_size:
            raise UserError(
                f"--image-size {self.image_size} is larger than --cache-size {cache_size}; "
                "raise --cache-size or lower --image-size"
            )
        lr = self.lr or default_lr(self.optimizer, self.batch_size)
        return PretrainConfig(**{**asdict(self), "cache_size": cache_size, "lr": lr})


class StopRequest:
    """Set by SIGINT/SIGTERM; the loop checks it after each step, saves, and exits cleanly."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.exit_code = 0

    def __call__(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum  # the shell's convention for "killed by signal N"

    def __enter__(self) -> StopRequest:
        self.previous = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def seeded_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


def pretraining_indices(split: Split, max_images: int, seed: int) -> list[int]:
    """Cache rows BYOL trains on: unlabelled + labelled (labels unused), never test."""
    indices = split.indices("unlabelled", "labelled")
    if max_images and max_images < len(indices):
        order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
        indices = sorted(indices[i] for i in order[:max_images].tolist())
    return indices


def knn_monitor(
    model: BYOL,
    images: torch.Tensor,
    split: Split,
    config: PretrainConfig,
    device: torch.device,
    precision: str,
    fmt: torch.memory_format,
) -> tuple[float, float]:
    """k-NN accuracy (labelled -> test) and the per-dimension std of the normalised features.

    The std is a collapse alarm: near 0 when all images map to one point, about 1/sqrt(D) when
    the features are spread.
    """
    labelled, test = split.indices("labelled"), split.indices("test")
    if not labelled or not test:
        return math.nan, math.nan
    labels = torch.tensor(split.table["label"].to_numpy())
    features = extract_features(
        model.backbone, images, labelled + test, config.image_size, device, precision, memory_format=fmt
    ).cpu()
    train, held_out = features[: len(labelled)], features[len(labelled) :]
    accuracy = knn_accuracy(train, labels[labelled], held_out, labels[test])
    spread = F.normalize(features, dim=1).std(dim=0).mean().item()
    return accuracy, spread


def check_resume_config(saved: dict, given: PretrainConfig) -> PretrainConfig:
    """On --resume the saved config wins; a flag that was changed from its default must agree."""
    defaults = PretrainConfig()
    resolved_defaults = asdict(defaults)
    for field in fields(PretrainConfig):
        value, default = getattr(given, field.name), resolved_defaults[field.name]
        if value != default and value != saved[field.name]:
            raise UserError(
                f"--{field.name.replace('_', '-')} {value} differs from the checkpoint's "
                f"{saved[field.name]}; drop the flag to resume, or start over without --resume"
            )
    return PretrainConfig(**saved)


def pretrain(
    config: PretrainConfig,
    out_dir: Path,
    device_name: str = "auto",
    precision_name: str = "auto",
    resume: bool = False,
    stop_after_epochs: int = 0,
) -> dict:
    """Run (or resume) BYOL pretraining; returns the metrics summary also stored in byol.pt."""
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_FILE
    checkpoint = None
    if resume:
        if not checkpoint_path.is_file():
            raise UserError(f"--resume: no checkpoint {checkpoint_path}; run without --resume to start")
        checkpoint = load_torch(checkpoint_path)
        config = check_resume_config(checkpoint["config"], config)
    config = config.resolved()
    device = resolve_device(device_name)
    precision = resolve_precision(precision_name, device)
    fmt = memory_format(device, precision)

    split = read_split(out_dir)
    train_indices = pretraining_indices(split, config.max_images, config.seed)
    if config.batch_size > len(train_indices):
        raise UserError(
            f"--batch-size {config.batch_size} is larger than the {len(train_indices)} "
            "pretraining images; lower --batch-size"
        )
    images = load_cache(split, out_dir, config.cache_size, device)  # (N, 3, S, S) uint8
    steps_per_epoch = len(train_indices) // config.batch_size  # the last partial batch is dropped
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = int(config.warmup_fraction * total_steps)
    views = BYOLViews(config.image_size, crop_scale=(config.crop_min_scale, 1.0))

    torch.manual_seed(config.seed)
    model = BYOL(resnet18_backbone(), RESNET18_FEATURES).to(device, memory_format=fmt)
    optimizer = make_optimizer(config.optimizer, model, config.lr, config.weight_decay)
    epoch, batch_in_epoch, step, metrics = 0, 0, 0, []
    generator_state, loss_sum = None, 0.0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        epoch, batch_in_epoch, step = checkpoint["epoch"], checkpoint["batch_in_epoch"], checkpoint["step"]
        metrics, loss_sum = checkpoint["metrics"], checkpoint["loss_sum"]
        generator_state = checkpoint["generator_state"]
        log.info(f"resuming at epoch {epoch + 1}, batch {batch_in_epoch} of {steps_per_epoch}")
    write_json(
        out_dir / CONFIG_FILE,
        {
            **asdict(config),
            "device": str(device),
            "precision": precision,
            "pretraining_images": len(train_indices),
        },
    )
    log.info(
        f"BYOL: {len(train_indices)} images, {steps_per_epoch} steps/epoch x {config.epochs} epochs, "
        f"{config.optimizer} lr {config.lr:g}, device {device}, precision {precision}"
    )

    def save_checkpoint(next_batch: int, generator_state: torch.Tensor | None) -> None:
        save_torch(
            checkpoint_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "config": asdict(config),
                "epoch": epoch,
                "batch_in_epoch": next_batch,
                "step": step,
                "metrics": metrics,
                "loss_sum": loss_sum,
                "generator_state": generator_state,
            },
        )

    if not metrics:  # epoch 0: the random-init baseline of the k-NN monitor
        knn_acc, feature_std = knn_monitor(model, images, split, config, device, precision, fmt)
        metrics.append(
            {
                "epoch": 0,
                "step": 0,
                "loss": math.nan,
                "tau": config.tau_base,
                "lr": 0.0,
                "knn_acc": knn_acc,
                "feature_std": feature_std,
                "images_per_s": math.nan,
                "seconds": 0.0,
            }
        )
        log.info(f"epoch 0: knn_acc {knn_acc:.4f}")

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
            )
            for batch_in_epoch in bar:
                rows = epoch_rows[
                    batch_in_epoch * config.batch_size : (batch_in_epoch + 1) * config.batch_size
                ]
                batch = images[rows].to(device, non_blocking=True)  # (B, 3, S, S) uint8
                view_1, view_2 = views(batch, generator)
                view_1, view_2 = view_1.contiguous(memory_format=fmt), view_2.contiguous(memory_format=fmt)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, warmup_steps, config.lr)
                with autocast(device, precision):
                    loss = model(view_1, view_2)
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise UserError(
                        f"the loss became {loss_value} at epoch {epoch + 1}, step {step}; "
                        f"stopped, the last good checkpoint {checkpoint_path} is kept. "
                        "Lower --lr and start again"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                model.update_target(tau_at(step, total_steps, config.tau_base))
                step += 1
                loss_sum += loss_value
                images_per_s = (
                    (batch_in_epoch + 1 - first_batch) * config.batch_size / (time.perf_counter() - started)
                )
                bar.set_postfix(loss=f"{loss_value:.3f}", images_per_s=f"{images_per_s:.1f}")
                if stop.signal_name or time.perf_counter() - last_save > CHECKPOINT_EVERY_S:
                    save_checkpoint(batch_in_epoch + 1, generator.get_state())
                    last_save = time.perf_counter()
                    if stop.signal_name:
                        bar.close()
                        raise Stopped(
                            f"stopped by {stop.signal_name}; checkpoint saved in {checkpoint_path}, "
                            "continue with --resume",
                            stop.exit_code,
                        )
            bar.close()
            seconds = time.perf_counter() - started
            epoch += 1
            knn_acc, feature_std = math.nan, math.nan
            if config.knn_every and (epoch % config.knn_every == 0 or epoch == config.epochs):
                knn_acc, feature_std = knn_monitor(model, images, split, config, device, precision, fmt)
            metrics.append(
                {
                    "epoch": epoch,
                    "step": step,
                    "loss": loss_sum / steps_per_epoch,
                    "tau": tau_at(step, total_steps, config.tau_base),
                    "lr": lr_at(step - 1, total_steps, warmup_steps, config.lr),
                    "knn_acc": knn_acc,
                    "feature_std": feature_std,
                    "images_per_s": (steps_per_epoch - first_batch) * config.batch_size / seconds,
                    "seconds": seconds,
                }
            )
            log.info(
                f"epoch {epoch}: loss {metrics[-1]['loss']:.4f} knn_acc {knn_acc:.4f} "
                f"{metrics[-1]['images_per_s']:.1f} images/s"
            )
            batch_in_epoch, loss_sum = 0, 0.0
            save_checkpoint(0, None)
            write_csv(out_dir / METRICS_FILE, pd.DataFrame(metrics))
            if stop_after_epochs and epoch < config.epochs and epoch % stop_after_epochs == 0:
                raise Stopped(
                    f"paused after epoch {epoch} as asked (--stop-after-epochs); continue with --resume", 0
                )

    summary = summarize(metrics)
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
    return summary


def summarize(metrics: list[dict]) -> dict:
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
