"""What a pretraining run is asked to do: PretrainConfig (everything that determines its result, with
its checks), and the snapshot and compile choices of its RunOptions (byol.run_options)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from byol.augment import MIN_IMAGE_SIZE
from byol.cache import check_view_size, default_cache_size
from byol.errors import UserError
from byol.model import MIN_BATCH_SIZE, MIN_BATCH_SIZE_REASON
from byol.optim import OPTIMIZERS, default_lr


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
    lars_clip: bool = False  # cap each tensor's LARS rate at lr (LARC; solo-learn's clip_lars_lr)
    predictor_lr_scale: float = 1.0  # the predictor's rate: this x the scheduled rate
    warmup_fraction: float = 0.1
    tau_base: float = 0.996
    crop_min_scale: float = 0.08
    blur_sigma_min: float = 0.1  # Gaussian blur sigma range in pixels of the view (the paper's, at 224 px)
    blur_sigma_max: float = 2.0
    seed: int = 0
    knn_every: int = 1
    # The diagnostic k-NN's voters: this many pretraining images with their folder labels (0: off).
    # Labels the low-label setting does not have, for ranking recipes only (evaluate.diagnostic_voters).
    diag_voters: int = 5000
    max_images: int = 0  # 0: all pretraining images (labelled and unlabelled)
    sync_bn: bool = False  # BatchNorm statistics over the global batch when several processes train
    # Progressive resizing: the views grow through these sizes (px, rising, each below image_size) to
    # image_size, in equal shares of the steps; [] : image_size throughout (see view_size_at).
    progressive_sizes: list[int] = field(default_factory=list)

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
        if self.optimizer != "lars" and self.lars_clip:
            raise UserError(f"--lars-clip applies to --optimizer lars only, not {self.optimizer}")
        if not (math.isfinite(self.predictor_lr_scale) and self.predictor_lr_scale > 0):
            raise UserError(f"--predictor-lr-scale {self.predictor_lr_scale}: must be a finite number > 0")
        cache_size = self.cache_size or default_cache_size(self.image_size)
        check_view_size(self.image_size, cache_size)
        check_progressive_sizes(self.progressive_sizes, self.image_size)
        lr = self.lr or default_lr(self.optimizer, self.batch_size * world_size)
        return PretrainConfig(**{**asdict(self), "cache_size": cache_size, "lr": lr})


def check_progressive_sizes(sizes: list[int], image_size: int) -> None:
    rising = all(small < large for small, large in zip(sizes, [*sizes[1:], image_size]))
    if not rising or any(size < MIN_IMAGE_SIZE for size in sizes):
        raise UserError(
            f"--progressive-sizes {','.join(map(str, sizes))}: give rising sizes of {MIN_IMAGE_SIZE} px or "
            f"more, each below --image-size {image_size}"
        )


def view_sizes(config: PretrainConfig) -> list[int]:
    """The views' sizes in the order the run trains at them: the progressive sizes, then image_size."""
    return [*config.progressive_sizes, config.image_size]


def view_size_at(config: PretrainConfig, step: int, total_steps: int) -> int:
    """The views' size at `step` of `total_steps`: each of view_sizes in turn for an equal share of the
    steps (32,48 at 64 px: a third each), as progressive resizing grows images over a run (FFCV;
    Koçyiğit et al., arXiv 2212.05611). The step alone decides, so a resumed run sizes as a straight one."""
    sizes = view_sizes(config)
    return sizes[min(len(sizes) - 1, step * len(sizes) // max(1, total_steps))]


SNAPSHOT_DIR = "snapshots"


def snapshot_path(out_dir: Path, epoch: int) -> Path:
    return Path(out_dir) / SNAPSHOT_DIR / f"byol_epoch{epoch:04d}.pt"


def parse_snapshot_epochs(spec: str, epochs: int) -> set[int]:
    """--snapshots: "" (none), "log2" (epochs 1, 2, 4, 8, ... and the last) or a comma list of epochs."""
    spec = spec.strip()
    if not spec:
        return set()
    if spec == "log2":
        return {2**i for i in range(epochs.bit_length()) if 2**i <= epochs} | {epochs}
    try:
        chosen = {int(part) for part in spec.split(",") if part.strip()}
    except ValueError:
        chosen = set()
    if not chosen or not all(1 <= epoch <= epochs for epoch in chosen):
        raise UserError(
            f"--snapshots {spec!r}: use log2 (epochs 1, 2, 4, ... and the last) or a comma list of "
            f"epochs from 1 to --epochs {epochs}"
        )
    return chosen


COMPILE_MODES = ("auto", "on", "off")


# Steps left from which --compile auto compiles on CUDA: where its one-off cost is paid back. On an
# H200 (benchmarks/README.md, "On a GPU"), at 64 px and batch 64, the compiled step ran 1.15x the
# eager one after about 44 s of compiling in a new process: break-even at about 7,700 steps.
COMPILE_PAYS_AFTER_STEPS = 8000


def use_compile(mode: str, device: torch.device, steps_left: int) -> bool:
    """--compile: torch.compile the training step's forward and backward; auto: on CUDA, for a run
    (or what a --resume has left of it) long enough for the compile to pay, COMPILE_PAYS_AFTER_STEPS.

    On this project's 2-core bf16 CPU, benchmarks/bench_byol.py --compile-only measured 95 s of
    compiling for a step 1.01x as fast (77.4 vs 76.6 images/s, interleaved): inside the noise, and
    paid again after every --resume, so a CPU trains uncompiled unless asked.
    """
    if mode == "auto":
        return device.type == "cuda" and steps_left >= COMPILE_PAYS_AFTER_STEPS
    return mode == "on"
