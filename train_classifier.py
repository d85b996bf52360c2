"""Stage 3: train classifiers on the labelled images, random init vs BYOL init, fine-tuned vs frozen.

Reads the split, its image cache and byol.pt (--split, --cache-dir, --weights; by default those in
--out-dir); writes classifier_metrics.csv (init, mode, seed,
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

from byol.classifier_flags import (
    GRID_FLAGS,
    RATE_FLAGS,
    TRAINING_FLAGS,
    add_classifier_flags,
    config_from_args,
)
from byol.cli import (
    StageArgumentParser,
    add_batch_and_device_arguments,
    add_out_dir_argument,
    add_resume_arguments,
    run_stage,
)
from byol.comparison import run_classifiers
from byol.files import read_csv
from byol.finetune import ClassifierConfig
from byol.outputs import PAIRED_FILE
from byol.report import format_summary
from byol.run_options import add_input_arguments, options_from_args


def get_args_parser() -> argparse.ArgumentParser:
    defaults = ClassifierConfig()
    parser = StageArgumentParser(description=__doc__)
    add_out_dir_argument(
        parser, "writes the classifiers' CSVs; reads the split, image cache and byol.pt here unless told"
    )
    inputs = parser.add_argument_group("inputs (default: the files in --out-dir)")
    add_input_arguments(inputs, weights=True)
    inputs.add_argument(
        "--pretrained-elsewhere",
        action="store_true",
        help="the weights were pretrained on other images than this split's (for example the released "
        "Cats-and-Dogs backbone, results/long_run_2/byol_resnet18_fp16.pt, on your own images): skip "
        "the check that their pretraining held out this split's validation and test images. Wrong "
        "when the split's images were in that pretraining: its scores would then be inflated",
    )
    add_classifier_flags(parser.add_argument_group("the grid"), defaults, GRID_FLAGS)
    add_classifier_flags(parser.add_argument_group("training"), defaults, TRAINING_FLAGS)
    add_classifier_flags(parser.add_argument_group("learning rates and their choice"), defaults, RATE_FLAGS)
    add_running_flags(parser.add_argument_group("where and how it runs"), defaults)
    return parser


def add_running_flags(group, defaults: ClassifierConfig) -> None:
    """Batch, device, processes, resuming."""
    add_batch_and_device_arguments(
        group, defaults.batch_size, sync_bn="fine-tuning BatchNorm statistics over the global batch"
    )
    add_resume_arguments(
        group,
        "keep the runs already complete in classifier_metrics.csv (same split and settings) and train the "
        "rest; a run of --inits random alone (no byol.pt needed) resumes with --inits random,byol",
    )


def main() -> None:
    args = get_args_parser().parse_args()
    config = config_from_args(
        args, ClassifierConfig(), (*GRID_FLAGS, *TRAINING_FLAGS, *RATE_FLAGS, "sync_bn")
    )
    summary = run_classifiers(config, args.out_dir, options_from_args(args))
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_summary(summary, read_csv(args.out_dir / PAIRED_FILE, ["verdict"], "run again")))


if __name__ == "__main__":
    run_stage(main)
