"""Stage 2: pretrain a ResNet18 from random weights with BYOL on the unlabelled images.

Reads --out-dir/splits.csv (from data_split.py), trains on the unlabelled and labelled images
(labels ignored; the test split is never seen) and writes --out-dir/byol.pt, whose "backbone"
loads strictly into torchvision.models.resnet18() with fc = nn.Identity().

Several GPUs (or CPU processes): torchrun --nproc-per-node N train_byol.py ...
Each process then takes --batch-size images per step, so the global batch is N x --batch-size
(the default learning rate scales with it); only the first process writes files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from byol.budget import SETTINGS, duration
from byol.cli import (
    StageArgumentParser,
    add_batch_and_device_arguments,
    add_out_dir_argument,
    add_resume_arguments,
    comma_numbers,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run_stage,
)
from byol.device import resolve_device
from byol.optim import BASE_LR_PER_256, OPTIMIZERS
from byol.pretrain import COMPILE_MODES, PretrainConfig, pretrain
from byol.run_options import add_input_arguments, options_from_args

# A setting is a file of flags, the defaults of every flag not given (reference: the library's own).
CONFIGS = Path(__file__).resolve().parent / "configs"
SETTING_FILES = {"cpu": CONFIGS / "cpu.args", "gpu": CONFIGS / "gpu.args"}


def get_args_parser() -> argparse.ArgumentParser:
    defaults = PretrainConfig()
    parser = StageArgumentParser(description=__doc__)
    add_out_dir_argument(parser, "writes byol.pt; reads the split and the image cache here unless told")
    add_input_arguments(parser.add_argument_group("inputs (default: the files in --out-dir)"))
    add_length_flags(parser.add_argument_group("how long"), defaults)
    add_view_flags(parser.add_argument_group("images and views"), defaults)
    add_optimiser_flags(parser.add_argument_group("optimisation"), defaults)
    add_monitor_flags(parser.add_argument_group("k-NN monitor"), defaults)
    add_running_flags(parser.add_argument_group("where and how it runs"), defaults)
    return parser


def add_length_flags(group, defaults: PretrainConfig) -> None:
    """The setting, and the number of epochs or the time they may take."""
    group.add_argument(
        "--setting",
        choices=SETTINGS,
        default="auto",
        help="the defaults every flag not given takes, from a file. cpu: configs/cpu.args, the long run's "
        "recipe (64 px, batch 64, LARS eta 0.005, the predictor at 10x the scheduled rate) sized by "
        "--time-budget, 2 hours unless given; gpu: configs/gpu.args, the same recipe scaled to batch 256 "
        "(the rule is in the file; not yet run on a GPU); reference: the library's defaults (150 px, batch "
        "256, 100 epochs). auto: cpu when --device resolves to a CPU, else gpu",
    )
    group.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"default {defaults.epochs}, or as many as fit in --time-budget; given, it overrides the budget",
    )
    group.add_argument(
        "--time-budget",
        type=duration,
        default=0.0,
        metavar="DURATION",
        help="train as many epochs as fit in this time (20m, 2h, 1h30m), at the speed measured on this "
        "machine before the first step; fixed then, so --resume stays exact (default: none; the cpu "
        "setting's own)",
    )


def add_view_flags(group, defaults: PretrainConfig) -> None:
    """What BYOL trains on: the images, the views' size and augmentations."""
    group.add_argument(
        "--max-images",
        type=non_negative_int,
        default=defaults.max_images,
        help="pretrain on a random subset of this many images (0: all)",
    )
    group.add_argument(
        "--image-size", type=positive_int, default=defaults.image_size, help="side of each view, px"
    )
    group.add_argument(
        "--cache-size",
        type=non_negative_int,
        default=defaults.cache_size,
        help="side of the decoded image cache, px (default: 1.15 x --image-size)",
    )
    group.add_argument(
        "--progressive-sizes",
        type=comma_numbers(positive_int),
        default=defaults.progressive_sizes,
        metavar="PX[,PX...]",
        help="progressive resizing: views of these sizes (rising, below --image-size) first, then "
        "--image-size, each for an equal share of the steps (e.g. 32,48 at 64 px: a third each; smaller "
        "views make cheaper steps, so a --time-budget fits more of them); the blur range scales with "
        "the size",
    )
    for end in ("min", "max"):
        group.add_argument(
            f"--blur-sigma-{end}",
            type=positive_float,
            default=getattr(defaults, f"blur_sigma_{end}"),
            help=f"{end} Gaussian blur sigma, px of the view (paper: 0.1-2.0 at 224 px; "
            "x image-size/224 keeps its relative strength)",
        )
    group.add_argument(
        "--crop-min-scale",
        type=float,
        default=defaults.crop_min_scale,
        help="smallest random crop, as a fraction of the image area",
    )
    group.add_argument("--seed", type=int, default=defaults.seed)


def add_optimiser_flags(group, defaults: PretrainConfig) -> None:
    """The optimiser, its rates, and the target network's EMA."""
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    group.add_argument(
        "--lr",
        type=non_negative_float,
        default=defaults.lr,
        help="peak learning rate (default: "
        + ", ".join(f"{k} {v:g}" for k, v in BASE_LR_PER_256.items())
        + " x batch-size / 256)",
    )
    group.add_argument("--weight-decay", type=non_negative_float, default=defaults.weight_decay)
    group.add_argument(
        "--lars-trust",
        type=positive_float,
        default=defaults.lars_trust,
        help="LARS trust coefficient eta (--optimizer lars only): a step moves each weight tensor by about "
        "lr x eta x its norm",
    )
    group.add_argument(
        "--lars-clip",
        action="store_true",
        help="cap each weight tensor's LARS rate at --lr (LARC; solo-learn's clip_lars_lr, with eta 0.02)",
    )
    group.add_argument(
        "--predictor-lr-scale",
        type=positive_float,
        default=defaults.predictor_lr_scale,
        help="the predictor's learning rate: this x the scheduled rate (e.g. 10)",
    )
    group.add_argument(
        "--warmup-fraction",
        type=non_negative_float,
        default=defaults.warmup_fraction,
        help="fraction of all steps spent warming the learning rate up",
    )
    group.add_argument(
        "--tau-base", type=float, default=defaults.tau_base, help="EMA rate at step 0; rises to 1 on a cosine"
    )


def add_monitor_flags(group, defaults: PretrainConfig) -> None:
    """The k-NN monitor of the features during training."""
    group.add_argument(
        "--knn-every",
        type=non_negative_int,
        default=defaults.knn_every,
        help="k-NN monitor every N epochs (0: only at the start and end)",
    )
    group.add_argument(
        "--diag-voters",
        type=non_negative_int,
        default=defaults.diag_voters,
        help="diagnostic k-NN (k=20 and k=200, columns val_knn_k20/k200): this many pretraining images "
        "(balanced, a fixed sample) vote with their folder labels, which the low-label setting does not "
        "have. It measures the features precisely enough to choose a pretraining recipe; nothing in the "
        "comparison (probe or fine-tuning rates) may use it. 0: off",
    )


def add_running_flags(group, defaults: PretrainConfig) -> None:
    """Batch, device, processes, checkpoints, snapshots, compiling."""
    add_batch_and_device_arguments(
        group,
        defaults.batch_size,
        sync_bn="BatchNorm statistics over the global batch instead of each process's",
    )
    add_resume_arguments(group, "continue from --out-dir/byol_checkpoint.pt")
    group.add_argument(
        "--stop-after-epochs",
        type=non_negative_int,
        default=0,
        help="pause (checkpoint and exit) every N epochs, to split a long run into sessions",
    )
    group.add_argument(
        "--snapshots",
        default="",
        metavar="EPOCHS",
        help="also save the backbone after these epochs to --out-dir/snapshots/byol_epochNNNN.pt (byol.pt's "
        "format): log2 (epochs 1, 2, 4, 8, ... and the last) or a comma list; default none",
    )
    group.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        default="auto",
        help="torch.compile the training step (compiling costs about 45 s on a GPU, minutes on a CPU, per "
        "process and per --resume). auto: on CUDA when 8,000 or more steps are left (an H200 measured 1.15x, "
        "paid back after about 7,700 steps; a 2-core bf16 CPU 1.01x: benchmarks/README.md)",
    )


def flags_in(argv: list[str] | None) -> dict:
    """The flags a command line (and its @files) gives, by destination, with their values; a flag
    not given is left out (parsed into a namespace that already holds a marker for every flag)."""
    parser = get_args_parser()
    unset = object()
    blank = argparse.Namespace(**{name: unset for name in vars(parser.parse_args([]))})
    return {name: value for name, value in vars(parser.parse_args(argv, blank)).items() if value is not unset}


def setting_recipe(setting: str) -> dict:
    """The flags a setting's file gives (SETTING_FILES; {} for the gpu setting)."""
    path = SETTING_FILES.get(setting)
    return flags_in([f"@{path}"]) if path else {}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, str]:
    """The flags, with the defaults of the setting they ask for (--setting; auto: by the device).

    Every flag given wins over the setting. In the cpu setting, a run given another --optimizer
    than LARS gets that optimiser's own default rate instead of the recipe's LARS rate, and one given
    another --image-size the default cache for it and the paper's blur scaled to it.
    """
    args = get_args_parser().parse_args(argv)
    given = flags_in(argv)
    setting = args.setting
    if setting == "auto":
        setting = "cpu" if resolve_device(args.device).type == "cpu" else "gpu"
    recipe = setting_recipe(setting)
    if recipe:
        if args.optimizer != recipe.get("optimizer", args.optimizer):
            recipe.pop("lr", None), recipe.pop("lars_trust", None)
        if "image_size" in given:  # the recipe's cache and blur are for its 64 px views
            recipe.pop("cache_size")
            recipe["blur_sigma_min"], recipe["blur_sigma_max"] = (
                round(sigma * args.image_size / 224, 3) for sigma in (0.1, 2.0)
            )
        for name, value in recipe.items():
            if name not in given:
                setattr(args, name, value)
    if "epochs" in given:
        args.time_budget = 0.0  # an explicit --epochs overrides the budget
    elif args.time_budget or "epochs" not in recipe:
        args.epochs = PretrainConfig.epochs  # a placeholder where a --time-budget sizes the run
    return args, setting


def main() -> None:
    args, setting = parse_args()
    config = PretrainConfig(**{name: getattr(args, name) for name in PretrainConfig.__dataclass_fields__})
    options = options_from_args(
        args,
        stop_after_epochs=args.stop_after_epochs,
        snapshot_epochs=args.snapshots,
        compile_mode=args.compile,
        time_budget_s=args.time_budget,
        setting=setting,
    )
    pretrain(config, args.out_dir, options)


if __name__ == "__main__":
    run_stage(main)
