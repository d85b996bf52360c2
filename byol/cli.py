"""What every stage script shares: turning a UserError (or running out of memory) into one line and
exit status 2, and the argparse types and flags the stages have in common.

Importable without torch (plot_results.py runs without it): what needs torch imports it when called.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path

from byol.errors import Stopped, UserError, first_line

# Every stage's default --out-dir: a git-ignored run folder, so that running the pipeline never changes
# a committed file (results/ holds only committed studies, each written with an explicit --out-dir).
DEFAULT_OUT_DIR = Path("runs/pipeline")


def add_out_dir_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT_DIR,
        help=f"{what} (default: {DEFAULT_OUT_DIR}, git-ignored)",
    )


class StageArgumentParser(argparse.ArgumentParser):
    """argparse that also reads flags from files: `python train_byol.py @configs/study_byol.args`.

    In the file, flags and values are separated by spaces or line breaks and `#` starts a comment, so
    a recipe lives in one readable file that the Makefile, the README and notes point at. Flags after
    the @file override it (argparse keeps the last value given).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(
            fromfile_prefix_chars="@", formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
        )

    def convert_arg_line_to_args(self, arg_line: str) -> list[str]:
        return arg_line.split("#", 1)[0].split()


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's `main`; a UserError becomes `error: ...` on stderr and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Stopped as stopped:
        print(stopped, file=sys.stderr)
        sys.exit(stopped.exit_code)
    except RuntimeError as error:  # torch.cuda.OutOfMemoryError is one
        if not is_out_of_memory(error):
            raise
        print(
            f"error: out of memory ({first_line(error)}); start again with a lower --batch-size or "
            "--image-size (--overwrite), or free the device and continue with --resume",
            file=sys.stderr,
        )
        sys.exit(2)


def is_out_of_memory(error: RuntimeError) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's "can't allocate memory"."""
    torch = sys.modules.get("torch")  # a stage that never imported torch cannot have run out in it
    cuda_oom = torch is not None and isinstance(error, torch.cuda.OutOfMemoryError)
    return cuda_oom or "can't allocate memory" in str(error)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse turns the ValueError into a one-line error, exit 2)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (float() alone lets "nan", "inf" and "-1" through)."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def valid_batch_size(text: str) -> int:
    from byol.model import MIN_BATCH_SIZE, MIN_BATCH_SIZE_REASON  # imports torch: only the training stages

    value = int(text)
    if value < MIN_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"{MIN_BATCH_SIZE_REASON}, got {value}")
    return value


def add_batch_and_device_arguments(
    parser: argparse.ArgumentParser, batch_size: int, sync_bn: str | None = None
) -> None:
    """--batch-size, --device and --precision, which the training stages share; and --sync-bn, whose
    help (`sync_bn`, what it synchronises) a stage that trains under torchrun gives."""
    from byol.device import PRECISIONS  # imports torch: only the training stages call this

    parser.add_argument(
        "--batch-size",
        type=valid_batch_size,
        default=batch_size,
        help="images per step and per process (global batch: this x the number of processes)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bf16 autocast + channels-last where the device has bf16 units, else fp32; fp16: autocast "
        "with loss scaling, for GPUs with fast fp16 but no bf16 (T4, RTX 20xx, GTX 16xx, V100, P100)",
    )
    if sync_bn is not None:
        parser.add_argument("--sync-bn", action="store_true", help=f"under torchrun: {sync_bn}")


def add_resume_arguments(parser: argparse.ArgumentParser, resume_help: str) -> None:
    """--resume or --overwrite: what to do with an earlier run in --out-dir (without either, refuse)."""
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--resume", action="store_true", help=resume_help)
    choice.add_argument(
        "--overwrite",
        action="store_true",
        help="start over although --out-dir holds an earlier run (replacing its files as this run writes)",
    )


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def comma_numbers(parse_one):
    """An argparse type: a comma list of one or more numbers, each checked by `parse_one`."""

    def parse(text: str) -> list:
        try:
            values = [parse_one(item) for item in comma_list(text)]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of numbers") from None
        if not values:
            raise argparse.ArgumentTypeError("give at least one number")
        return values

    return parse
