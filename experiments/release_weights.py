"""Release a pretraining's backbone: byol.pt's ResNet18 as an fp16 state dict (about 22 MB) that loads
with torch.load(..., weights_only=True) into a stock torchvision resnet18 with fc = nn.Identity(),
checked to score the same validation k-NN as the full-precision weights.

    python experiments/release_weights.py RUN_DIR OUT.pt [--split ...] [--cache-dir ...] [--weights ...]

Writes OUT.pt and OUT.json beside it (its sha256 and size, the pretraining's config, the fingerprint
of the images it held out, and both k-NN results); refuses, writing nothing, when the fp16 copy's
k-NN differs from the full-precision one's by more than --tolerance. train_classifier.py --weights
OUT.pt then uses it like a byol.pt. Loading it anywhere else:

    model = torchvision.models.resnet18()
    model.fc = torch.nn.Identity()
    model.load_state_dict(torch.load("OUT.pt", weights_only=True))  # fp16 values, copied into fp32
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch
import torchvision
from torch import nn

from byol.cache import load_cache
from byol.cli import run_stage
from byol.data import read_split
from byol.distributed import Runtime
from byol.errors import UserError
from byol.evaluate import DIAG_KS, knn_monitor, monitor_rows
from byol.files import load_torch, save_torch, write_json
from byol.finetune import load_byol_backbone
from byol.pretrain_config import PretrainConfig
from byol.run_options import RunOptions, add_input_arguments, input_options

SCORES = ("val_knn_labelled", *(f"val_knn_k{k}" for k in DIAG_KS))


def stock_resnet18(state: dict) -> nn.Module:
    """The released file as a user loads it: a torchvision resnet18 without its classifier."""
    model = torchvision.models.resnet18()
    model.fc = nn.Identity()
    model.load_state_dict(state)
    return model.eval()


def knn_scores(backbone: nn.Module, run_dir: Path, config: dict, options: RunOptions) -> dict[str, float]:
    """The pretraining monitor's k-NN on the validation split, in fp32 on the CPU (so that the only
    difference between two calls is the weights)."""
    split = read_split(options.split_path(run_dir))
    defaults = PretrainConfig()
    cpu = torch.device("cpu")
    images = load_cache(
        split, options.cache_path(run_dir), config.get("cache_size", defaults.cache_size), cpu
    )
    rows = monitor_rows(split, config.get("diag_voters", defaults.diag_voters))
    if not rows.validation:
        raise UserError(f"{options.split_path(run_dir)} has no validation images: the check needs them")
    image_size = config.get("image_size", defaults.image_size)
    scores = knn_monitor(backbone, images, rows, image_size, Runtime(cpu))
    return {name: scores[name] for name in SCORES}


def release(run_dir: Path, out: Path, options: RunOptions, tolerance: float) -> dict:
    """Write `out` (and its .json) from the run's byol.pt, or refuse and write nothing."""
    weights = options.weights_path(run_dir)
    backbone, config, held_out = load_byol_backbone(weights)
    state = {
        name: value.half() if value.is_floating_point() else value
        for name, value in backbone.state_dict().items()
    }
    full = knn_scores(backbone.eval(), run_dir, config, options)
    save_torch(out, state)
    released = stock_resnet18(torch.load(out, weights_only=True))
    halved = knn_scores(released, run_dir, config, options)
    worst = max(abs(full[name] - halved[name]) for name in SCORES)
    if worst > tolerance:
        out.unlink()
        raise UserError(
            f"the fp16 copy of {weights} scores a k-NN {worst:.4f} away from the full-precision weights "
            f"(--tolerance {tolerance}): not released"
        )
    record = {
        "file": out.name,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "bytes": out.stat().st_size,
        "source": weights.name,  # the run's file, not this machine's path to it
        "source_step": load_torch(weights).get("step"),
        "held_out_sha256": held_out,
        "knn_full_precision": full,
        "knn_fp16": halved,
        "config": config,
    }
    write_json(out.with_suffix(".json"), record)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path, help="the train_byol.py output folder")
    parser.add_argument("out", type=Path, help="the .pt file to write (its .json beside it)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.002,
        help="the largest k-NN difference allowed between fp16 and full precision (0.002: 5 of 2,500)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier release at OUT")
    add_input_arguments(parser, weights=True)
    args = parser.parse_args()
    if args.out.suffix != ".pt":
        raise UserError(f"{args.out}: give the released file a .pt name (its .json goes beside it)")
    if not args.overwrite and (args.out.exists() or args.out.with_suffix(".json").exists()):
        raise UserError(f"{args.out} (or its .json) already exists: pass --overwrite to replace the release")
    record = release(args.run_dir, args.out, RunOptions(**input_options(args)), args.tolerance)
    for name in SCORES:
        full, halved = record["knn_full_precision"][name], record["knn_fp16"][name]
        print(f"{name}: full precision {full:.4f}, fp16 {halved:.4f}")
    print(f"wrote {args.out} ({record['bytes'] / 2**20:.1f} MiB, sha256 {record['sha256'][:12]}…)")


if __name__ == "__main__":
    run_stage(main)
