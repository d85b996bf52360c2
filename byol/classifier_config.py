"""Stage 3's settings: ClassifierConfig (what every classifier run of a grid shares, with its checks) and
the choices its flags take."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from byol.cache import check_view_size, default_cache_size
from byol.errors import UserError
from byol.model import MIN_BATCH_SIZE, MIN_BATCH_SIZE_REASON
from byol.outputs import INITS, MODES
from byol.pretrain_config import PretrainConfig


@dataclass
class ClassifierConfig:
    inits: list[str] = field(default_factory=lambda: list(INITS))
    modes: list[str] = field(default_factory=lambda: list(MODES))
    seeds: int = 3
    n_labels: list[int] = field(default_factory=lambda: [0])  # 0: the whole labelled split
    epochs: int = 30
    batch_size: int = 32  # per process; the global batch is batch_size x world size
    # Fine-tuning: the backbone's AdamW learning rate, one of these per (init, label count), chosen by
    # cross-validation on seed 0's labelled images (choose_finetune); a single value is used as it is.
    # A fixed 1e-3 moves every weight by about 1e-3 per step, against conv weights of 0.02-0.06: after
    # a few dozen steps little of a pretrained init is left, so gentler rates are candidates too.
    finetune_lrs: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3])
    finetune_folds: int = 3  # each fold fine-tunes a whole network: 3 folds cost 0.5x of 5
    # Fine-tuning's length, chosen like its rate (empty: `epochs` for every run): after the rate (at
    # `epochs`), the same folds score each of these epoch counts at that rate (a whole cosine schedule
    # each), widened past an edge like the rates; the best is every seed's run length. Too few epochs
    # handicap whichever init learns slower (random init's training loss was still falling at 30).
    finetune_epochs: list[int] = field(default_factory=list)
    cv_every_seed: bool = False  # choose the fine-tuning rate on every seed's images (x seeds the cost)
    labelled_sets: str = "per-seed"  # LABELLED_SETS: where each seed's labelled images come from
    head_lr: float = 1e-2  # the fine-tuned network's linear head (without --lp-ft)
    # LP-FT (Kumar et al. 2022, arXiv 2202.10054): fit the linear head on the frozen backbone first,
    # then fine-tune everything at the backbone's rate, head included, so that a random head's large
    # early gradients do not distort the pretrained features.
    lp_ft: bool = False
    # Frozen mode: the linear probe's learning rate, one of these per run, chosen by cross-validation
    # on that run's labelled images (choose_probe_lr); a single value is used as it is.
    probe_lrs: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2])
    # Frozen random backbones: BatchNorm statistics recomputed on this many unlabelled images (0: never),
    # kept for a run when its probe scores higher on the validation split than with the initial ones.
    bn_images: int = 2048
    weight_decay: float = 1e-4
    image_size: int = 0  # 0: byol.pt's image size, or PretrainConfig's default without byol.pt
    cache_size: int = 0  # 0: default_cache_size(image_size)
    # A rate chosen on an edge of its grid tells only that the grid stopped there: cross-validation
    # tries up to this many rates past the edge (widened_grid), for both inits and both modes.
    widen_rates: int = 2
    eval_every: int = 1  # test loss/accuracy every N epochs (and always at the last)
    # The split every run is scored on: the test split for a study's final tables; the validation split
    # where the scores choose something (recipe_search's probes), so that the test split never chooses.
    score_split: str = "test"
    # auto: scored on the test split when the split holds any (on validation when score_split names it),
    # else cv: stratified k-fold cross-validation on each run's labelled images (eval_folds folds, one
    # repeat per seed), for a user whose labels are too few to hold a test set out.
    evaluation: str = "auto"
    eval_folds: int = 5
    sync_bn: bool = False  # fine-tuning under torchrun: BatchNorm statistics over the global batch

    def check(self) -> None:
        """The flags' own checks, before anything is read or trained."""
        if self.batch_size < MIN_BATCH_SIZE:
            raise UserError(f"--batch-size {self.batch_size}: {MIN_BATCH_SIZE_REASON}")
        for flag, rates in (("--probe-lrs", self.probe_lrs), ("--finetune-lrs", self.finetune_lrs)):
            if not rates or not all(math.isfinite(lr) and lr > 0 for lr in rates):
                raise UserError(f"{flag} {rates}: give one or more learning rates above 0")
        if not all(isinstance(epochs, int) and epochs > 0 for epochs in self.finetune_epochs):
            raise UserError(f"--finetune-epochs {self.finetune_epochs}: give epoch counts above 0")
        if len(self.finetune_epochs) > 1 and self.evaluation == "cv":
            raise UserError(
                "--finetune-epochs with --evaluation cv: each fold's run would choose its own length, "
                "which the pooled folds cannot hold; give one --epochs"
            )
        if self.finetune_folds < 2:
            raise UserError(f"--finetune-folds {self.finetune_folds}: cross-validation needs 2 or more")
        if self.evaluation not in EVALUATIONS:
            raise UserError(f"--evaluation {self.evaluation}: choose from {','.join(EVALUATIONS)}")
        if self.eval_folds < 2:
            raise UserError(f"--eval-folds {self.eval_folds}: cross-validation needs 2 or more")
        if self.score_split not in SCORE_SPLITS:
            raise UserError(f"--score-split {self.score_split}: choose from {','.join(SCORE_SPLITS)}")
        if self.evaluation == "cv" and self.score_split != "test":
            raise UserError(
                f"--score-split {self.score_split} with --evaluation cv: cross-validation scores on the "
                "labelled images' held-out folds, never on a split; drop one of the two"
            )
        if self.labelled_sets not in LABELLED_SETS:
            raise UserError(f"--labelled-sets {self.labelled_sets}: choose from {','.join(LABELLED_SETS)}")
        for flag, values, allowed in (("--inits", self.inits, INITS), ("--modes", self.modes, MODES)):
            unknown = [value for value in values if value not in allowed]
            if unknown or not values:
                raise UserError(f"{flag} {','.join(values)}: choose from {','.join(allowed)}")

    def resolved(self, byol_config: dict) -> ClassifierConfig:
        """Checked, with the sizes left at 0 filled in: train at byol.pt's image size (`byol_config`,
        {} without one) and reuse its cache, unless told otherwise."""
        self.check()
        image_size = self.image_size or byol_config.get("image_size") or PretrainConfig().image_size
        cache_size = self.cache_size
        if not cache_size:
            same_size = byol_config.get("image_size") == image_size
            cache_size = (
                byol_config["cache_size"]
                if same_size and byol_config.get("cache_size")
                else default_cache_size(image_size)
            )
        check_view_size(image_size, cache_size)
        return replace(self, image_size=image_size, cache_size=cache_size)


LABELLED_SETS = ("per-seed", "split")


SCORE_SPLITS = ("test", "validation")


EVALUATIONS = ("auto", "test", "cv")
