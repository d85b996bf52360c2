"""Stage 3: train classifiers on the labelled images, random init vs BYOL init, fine-tuned vs frozen.

Reads --out-dir/splits.csv and --out-dir/byol.pt; writes classifier_metrics.csv (init, mode, seed,
n_labels, labelled_set, epoch, train_loss, train_acc, test_loss, test_acc, seconds, head_lr, backbone_lr),
classifier_summary.csv, classifier_paired.csv (BYOL - random per seed, with a 95 % interval) and
classifier_config.json. Every condition gets the same head, labelled images, test split and budget;
learning rates are chosen by cross-validation on the labelled images, never on the test split.

Several GPUs (or CPU processes): torchrun --nproc-per-node N train_classifier.py ... fine-tunes
data-parallel, each process taking --batch-size images per step (global batch: N x --batch-size).
"""

from __future__ import annotations

import argparse
import os

from byol.classifier_config import EVALUATIONS, LABELLED_SETS, SCORE_SPLITS
from byol.cli import (
    StageArgumentParser,
    add_batch_and_device_arguments,
    add_out_dir_argument,
    add_resume_arguments,
    comma_list,
    comma_numbers,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run_stage,
)
from byol.comparison import run_classifiers
from byol.files import read_csv
from byol.finetune import PROBE_FOLDS, ClassifierConfig
from byol.outputs import PAIRED_FILE
from byol.report import format_summary
from byol.run_options import RunOptions, add_input_arguments, input_options


def get_args_parser() -> argparse.ArgumentParser:
    defaults = ClassifierConfig()
    parser = StageArgumentParser(description=__doc__)
    add_out_dir_argument(
        parser, "writes the classifiers' CSVs; reads the split, image cache and byol.pt here unless told"
    )
    add_input_arguments(parser.add_argument_group("inputs (default: the files in --out-dir)"), weights=True)
    add_grid_flags(parser.add_argument_group("the grid"), defaults)
    add_training_flags(parser.add_argument_group("training"), defaults)
    add_rate_flags(parser.add_argument_group("learning rates and their choice"), defaults)
    add_running_flags(parser.add_argument_group("where and how it runs"), defaults)
    return parser


def add_grid_flags(group, defaults: ClassifierConfig) -> None:
    """Which conditions train: inits, modes, seeds, label counts."""
    group.add_argument("--inits", type=comma_list, default=defaults.inits, help="random,byol")
    group.add_argument(
        "--modes",
        type=comma_list,
        default=defaults.modes,
        help="finetune (whole network) and/or frozen (backbone fixed, linear head)",
    )
    group.add_argument(
        "--seeds", type=positive_int, default=defaults.seeds, help="repeats of every condition"
    )
    group.add_argument(
        "--n-labels",
        type=comma_numbers(non_negative_int),
        default=defaults.n_labels,
        help="train on a balanced subset of this many labelled images; a comma list sweeps "
        "(e.g. 25,50,100,250); 0: all of them",
    )
    group.add_argument(
        "--labelled-sets",
        choices=LABELLED_SETS,
        default=defaults.labelled_sets,
        help="per-seed: seed 0 trains on the split's labelled images, every other seed on its own balanced "
        "draw from all the pretraining images with their folder labels (every image of a class-folder "
        "dataset has one), so the seeds' spread covers which images were labelled; split: every seed "
        "draws from the split's labelled images only (the only labels you have), one set at their count",
    )


def add_training_flags(group, defaults: ClassifierConfig) -> None:
    """How long each run trains, on what size of image, and how often it is scored."""
    group.add_argument("--epochs", type=positive_int, default=defaults.epochs)
    group.add_argument("--weight-decay", type=non_negative_float, default=defaults.weight_decay)
    group.add_argument(
        "--image-size",
        type=non_negative_int,
        default=defaults.image_size,
        help="px; default: the image size byol.pt was pretrained at",
    )
    group.add_argument("--cache-size", type=non_negative_int, default=defaults.cache_size)
    group.add_argument(
        "--score-split",
        choices=SCORE_SPLITS,
        default=defaults.score_split,
        help="the split every run is scored on: test, for a study's final tables; validation, when the "
        "scores choose something (a recipe, a setting), so that the test split never does",
    )
    group.add_argument(
        "--evaluation",
        choices=EVALUATIONS,
        default=defaults.evaluation,
        help="test: score every run on --score-split; cv: stratified k-fold cross-validation on each run's "
        "labelled images (each fold trains on the others, rates chosen on them alone; one repeat per "
        "seed), for labels too few to hold a test set out; auto (default): test when the split has "
        "--score-split images, else cv",
    )
    group.add_argument(
        "--eval-folds",
        type=positive_int,
        default=defaults.eval_folds,
        help="--evaluation cv: the folds (every class needs this many labelled images or more)",
    )
    group.add_argument(
        "--eval-every",
        type=positive_int,
        default=defaults.eval_every,
        help="score the test split every N epochs (always at the last)",
    )


def add_rate_flags(group, defaults: ClassifierConfig) -> None:
    """The fine-tuning and probe rates, and how they are chosen."""
    group.add_argument(
        "--finetune-lrs",
        type=comma_numbers(positive_float),
        default=defaults.finetune_lrs,
        help="fine-tuning: AdamW learning rates for the backbone; for each init and label count the one "
        "with the best --finetune-folds cross-validated accuracy on seed 0's labelled images is used for "
        f"every seed (default {','.join(f'{lr:g}' for lr in defaults.finetune_lrs)}; the test split plays "
        "no part); one value: no choice",
    )
    group.add_argument(
        "--finetune-folds",
        type=positive_int,
        default=defaults.finetune_folds,
        help="cross-validation folds that choose the fine-tuning rate (each fold fine-tunes a network)",
    )
    group.add_argument(
        "--cv-every-seed",
        action="store_true",
        help="choose the fine-tuning rate on every seed's own labelled images (x seeds the cost)",
    )
    group.add_argument(
        "--lp-ft",
        action="store_true",
        help="fine-tuning starts from the frozen-backbone linear probe's head, then trains everything at "
        "the backbone's rate (LP-FT, Kumar et al. 2022)",
    )
    group.add_argument(
        "--head-lr",
        type=positive_float,
        default=defaults.head_lr,
        help="AdamW learning rate of the fine-tuned network's head (without --lp-ft)",
    )
    group.add_argument(
        "--probe-lrs",
        type=comma_numbers(positive_float),
        default=defaults.probe_lrs,
        help="frozen mode: AdamW learning rates for the linear probe; each run takes the one with the best "
        f"{PROBE_FOLDS}-fold cross-validated accuracy on its own labelled images (default "
        f"{','.join(f'{lr:g}' for lr in defaults.probe_lrs)}); one value: no choice. "
        "--resume with other values retrains only the frozen runs",
    )
    group.add_argument(
        "--bn-images",
        type=non_negative_int,
        default=defaults.bn_images,
        help="frozen random backbones: recompute BatchNorm statistics on this many unlabelled images, and "
        "keep them for a run when its probe scores higher on the validation split than with the initial "
        f"statistics (default {defaults.bn_images}; 0: never). --resume with another value retrains only "
        "the frozen runs",
    )
    group.add_argument(
        "--widen-rates",
        type=non_negative_int,
        default=defaults.widen_rates,
        help="when cross-validation chooses the lowest or highest rate of --finetune-lrs or --probe-lrs, "
        "try the next rate past that edge (a grid step further), up to N times "
        f"(default {defaults.widen_rates}); 0: the grids as given",
    )


def add_running_flags(group, defaults: ClassifierConfig) -> None:
    """Batch, device, processes, resuming."""
    add_batch_and_device_arguments(group, defaults.batch_size)
    group.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun: fine-tuning BatchNorm statistics over the global batch",
    )
    add_resume_arguments(
        group,
        "keep the runs already complete in classifier_metrics.csv (same split and settings) and train the "
        "rest; a run of --inits random alone (no byol.pt needed) resumes with --inits random,byol",
    )


def main() -> None:
    args = get_args_parser().parse_args()
    config = ClassifierConfig(**{name: getattr(args, name) for name in ClassifierConfig.__dataclass_fields__})
    options = RunOptions(
        device_name=args.device,
        precision_name=args.precision,
        resume=args.resume,
        overwrite=args.overwrite,
        **input_options(args),
    )
    summary = run_classifiers(config, args.out_dir, options)
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_summary(summary, read_csv(args.out_dir / PAIRED_FILE, ["verdict"], "run again")))


if __name__ == "__main__":
    run_stage(main)
