"""Stage 3's classifier flags, written once: train_classifier.py adds them all, experiments/ceiling.py the
fine-tuning ones with its own defaults, so that the two parse every flag alike.

Each flag is a ClassifierConfig field (`--n-labels` is `n_labels`); its default comes from the
ClassifierConfig a caller passes, and `{default}` in its help is that default, written as on the
command line.
"""

from __future__ import annotations

from collections.abc import Sequence

from byol.classifier_config import EVALUATIONS, LABELLED_SETS, SCORE_SPLITS, ClassifierConfig
from byol.cli import (
    comma_list,
    comma_numbers,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from byol.finetune import PROBE_FOLDS

GRID_FLAGS = ("inits", "modes", "seeds", "n_labels", "labelled_sets")
TRAINING_FLAGS = ("epochs", "weight_decay", "image_size", "cache_size", "score_split", "evaluation")
TRAINING_FLAGS += ("eval_folds", "eval_every")
RATE_FLAGS = ("finetune_lrs", "finetune_epochs", "finetune_folds", "cv_every_seed", "lp_ft", "head_lr")
RATE_FLAGS += ("probe_lrs", "bn_images", "widen_rates")

TYPES = {
    "inits": comma_list,
    "modes": comma_list,
    "seeds": positive_int,
    "n_labels": comma_numbers(non_negative_int),
    "epochs": positive_int,
    "weight_decay": non_negative_float,
    "image_size": non_negative_int,  # 0, its default, is a value it must accept
    "cache_size": non_negative_int,
    "eval_folds": positive_int,
    "eval_every": positive_int,
    "finetune_lrs": comma_numbers(positive_float),
    "finetune_epochs": comma_numbers(positive_int),
    "finetune_folds": positive_int,
    "head_lr": positive_float,
    "probe_lrs": comma_numbers(positive_float),
    "bn_images": non_negative_int,
    "widen_rates": non_negative_int,
}
CHOICES = {"labelled_sets": LABELLED_SETS, "score_split": SCORE_SPLITS, "evaluation": EVALUATIONS}
SWITCHES = ("cv_every_seed", "lp_ft")  # off unless given

HELP = {
    "inits": "random,byol",
    "modes": "finetune (whole network) and/or frozen (backbone fixed, linear head)",
    "seeds": "repeats of every condition (default {default})",
    "n_labels": "train on a balanced subset of this many labelled images; a comma list sweeps "
    "(e.g. 25,50,100,250); 0: all of them",
    "labelled_sets": "per-seed: seed 0 trains on the split's labelled images, every other seed on its own "
    "balanced draw from all the pretraining images with their folder labels (every image of a class-folder "
    "dataset has one), so the seeds' spread covers which images were labelled; split: every seed draws "
    "from the split's labelled images only (the only labels you have), one set at their count",
    "epochs": "(default {default})",
    "weight_decay": "AdamW weight decay (default {default})",
    "image_size": "px; default: the image size byol.pt was pretrained at",
    "cache_size": "px of the decoded-image cache; 0: a little above --image-size",
    "score_split": "the split every run is scored on: test, for a study's final tables; validation, when "
    "the scores choose something (a recipe, a setting), so that the test split never does",
    "evaluation": "test: score every run on --score-split; cv: stratified k-fold cross-validation on each "
    "run's labelled images (each fold trains on the others, rates chosen on them alone; one repeat per "
    "seed), for labels too few to hold a test set out; auto (default): test when the split has test "
    "images or --score-split validation is given, else cv",
    "eval_folds": "--evaluation cv: the folds (every class needs this many labelled images or more)",
    "eval_every": "score the held-out images every N epochs (always at the last; default {default})",
    "finetune_lrs": "fine-tuning: AdamW learning rates for the backbone; for each init and label count the "
    "one with the best --finetune-folds cross-validated accuracy on seed 0's labelled images is used for "
    "every seed (default {default}; the test split plays no part); one value: no choice",
    "finetune_epochs": "fine-tuning's length chosen like its rate: after the rate (at --epochs), the same "
    "folds score each of these epoch counts at that rate, and the best is every seed's run length "
    "(e.g. 30,60; widened past an edge like the rates; default: --epochs, no choice). Frozen probes keep "
    "--epochs",
    "finetune_folds": "cross-validation folds that choose the fine-tuning rate (each fold fine-tunes a "
    "network; default {default})",
    "cv_every_seed": "choose the fine-tuning rate on every seed's own labelled images (x seeds the cost)",
    "lp_ft": "fine-tuning starts from the frozen-backbone linear probe's head, then trains everything at "
    "the backbone's rate (LP-FT, Kumar et al. 2022)",
    "head_lr": "AdamW learning rate of the fine-tuned network's head (without --lp-ft; default {default})",
    "probe_lrs": "frozen mode: AdamW learning rates for the linear probe; each run takes the one with the "
    f"best {PROBE_FOLDS}-fold cross-validated accuracy on its own labelled images (default {{default}}); "
    "one value: no choice. --resume with other values retrains only the frozen runs",
    "bn_images": "frozen random backbones: recompute BatchNorm statistics on this many unlabelled images, "
    "and keep them for a run when its probe scores higher on the validation split than with the initial "
    "statistics (default {default}; 0: never). --resume with another value retrains only the frozen runs",
    "widen_rates": "when the choice falls on the lowest or highest rate of a grid (--finetune-lrs, "
    "--probe-lrs), try the next rate past that edge (a grid step further), up to N times (default "
    "{default}); 0: the grids as given",
}


def command_line_value(value) -> str:
    """A default as a user would type it: 1e-4,1e-3 for a list of rates."""
    if isinstance(value, list):
        return ",".join(command_line_value(item) for item in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_classifier_flags(
    group, defaults: ClassifierConfig, names: Sequence[str], helps: dict[str, str] | None = None
) -> None:
    """The flags of `names` (ClassifierConfig fields) with `defaults`' values; `helps` replaces the
    help of a flag whose meaning the caller narrows (the ceiling chooses its rate on validation)."""
    for name in names:
        help_text = (helps or {}).get(name, HELP[name])
        kwargs = {"help": help_text.replace("{default}", command_line_value(getattr(defaults, name)))}
        if name in SWITCHES:
            kwargs["action"] = "store_true"
        else:
            kwargs["default"] = getattr(defaults, name)
            kwargs.update({"choices": CHOICES[name]} if name in CHOICES else {"type": TYPES[name]})
        group.add_argument("--" + name.replace("_", "-"), **kwargs)


def config_from_args(args, defaults: ClassifierConfig, names: Sequence[str]) -> ClassifierConfig:
    """`defaults` with the parsed values of the flags `names` added (and --batch-size, which every
    training driver has)."""
    given = {name: getattr(args, name) for name in (*names, "batch_size")}
    return ClassifierConfig(**{**vars(defaults), **given})
