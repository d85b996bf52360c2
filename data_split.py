"""Stage 1: decode every image under --data-dir, drop the broken ones, and split the rest.

Writes splits.csv (path,label,class_name,split,...; split: labelled, unlabelled, validation or test),
rejected.csv (path,class_name,reason) and split_config.json to --out-dir. Run `python data_split.py
--help` for the flags.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image

from byol.cli import StageArgumentParser, add_out_dir_argument, non_negative_int, positive_int, run_stage
from byol.data import (
    SPLIT_CONFIG_FILE,
    SPLITS_FILE,
    SplitSizes,
    available_cpus,
    check_out_dir,
    make_split,
    save_split,
    summary_table,
)
from byol.download import PETIMAGES_URL, download_and_extract
from byol.resume import check_fresh_start


def get_args_parser() -> argparse.ArgumentParser:
    parser = StageArgumentParser(description=__doc__)
    add_folder_flags(parser.add_argument_group("where the images come from and the split goes"))
    add_size_flags(parser.add_argument_group("the split's sizes"))
    add_decoding_flags(parser.add_argument_group("decoding and checking the images"))
    return parser


def add_folder_flags(parser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder with one sub-folder per class (default: data/PetImages, or data/ with --download)",
    )
    parser.add_argument(
        "--unlabelled-dir",
        type=Path,
        default=None,
        help="a folder of images without labels (nested folders allowed, no classes): each image that "
        "decodes joins the unlabelled split, for pretraining; one with the same bytes as a --data-dir "
        "image is kept once, as labelled (listed in rejected.csv)",
    )
    add_out_dir_argument(parser, "where the split is written")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the split already in --out-dir (without it, an earlier split there is refused)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="download and extract the public archive into --data-dir first",
    )
    parser.add_argument("--url", default=PETIMAGES_URL, help="archive to download with --download")


def add_size_flags(parser) -> None:
    parser.add_argument(
        "--n-labelled", type=non_negative_int, default=250, help="labelled images, balanced across classes"
    )
    parser.add_argument(
        "--n-validation",
        type=non_negative_int,
        default=2500,
        help="held-out validation images with their labels, balanced across classes: what every choice "
        "(monitor, recipe, rate, epochs) is scored on, so that the test set never chooses (0 allowed)",
    )
    parser.add_argument(
        "--n-test",
        type=non_negative_int,
        default=2500,
        help="held-out test images, balanced across classes (0 allowed)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the split depends only on this and the files")


def add_decoding_flags(parser) -> None:
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=available_cpus(),
        help="processes decoding images in parallel",
    )
    parser.add_argument(
        "--min-size",
        type=positive_int,
        default=32,
        help="reject images whose short side is under this many pixels",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=Image.MAX_IMAGE_PIXELS,
        help="reject images with more pixels than this (Pillow's decompression-bomb limit)",
    )


def main() -> None:
    args = get_args_parser().parse_args()
    started = time.perf_counter()
    # Before downloading or decoding anything: a refusal should not cost minutes.
    check_fresh_start(args.out_dir, (SPLITS_FILE, SPLIT_CONFIG_FILE), resume=False, overwrite=args.overwrite)
    if args.download:
        image_dir = download_and_extract(args.url, args.data_dir or Path("data"))
    else:
        image_dir = args.data_dir or Path("data/PetImages")
    check_out_dir(image_dir, args.out_dir)
    result = make_split(
        image_dir,
        SplitSizes(args.n_labelled, args.n_validation, args.n_test),
        seed=args.seed,
        workers=args.workers,
        min_size=args.min_size,
        max_pixels=args.max_pixels,
        unlabelled_dir=args.unlabelled_dir,
    )
    settings = {
        name: getattr(args, name)
        for name in ("n_labelled", "n_validation", "n_test", "seed", "min_size", "max_pixels")
    }
    if args.unlabelled_dir is not None:
        settings["unlabelled_dir"] = str(args.unlabelled_dir.resolve())
    save_split(result, image_dir, args.out_dir, settings)
    print(summary_table(result))
    print(f"wrote {args.out_dir / SPLITS_FILE} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    run_stage(main)
