"""How and where a stage runs, beside what it learns (PretrainConfig, ClassifierConfig): one object for
every driver (train_byol.py, train_classifier.py and the experiments that call them as functions).

A stage writes into its output folder and by default reads what the earlier stages wrote there too.
`split`, `cache_dir` and `weights` (--split, --cache-dir, --weights) point it at inputs elsewhere, so
that runs sharing one split and one image cache need no links or copies: a pretraining trial, a snapshot
of a long run scored by a linear probe, a benchmark. Importable without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CACHE_DIR = "cache"
WEIGHTS_FILE = "byol.pt"


@dataclass(frozen=True)
class RunOptions:
    """An earlier run in the output folder needs `resume` (continue it) or `overwrite` (start over).

    Pretraining only: `snapshot_epochs` and `compile_mode` change how the run goes, not its result, so a
    resumed run may change them (see pretrain_config.parse_snapshot_epochs and use_compile). With
    `time_budget_s` a new run measures this machine's speed and trains as many epochs as fit
    (config.epochs is then replaced, and saved); a resumed run keeps the epochs it started with.
    `stop_after_epochs` pauses the run (resumable) every that many epochs; `setting` is recorded in
    byol_config.json (--setting).
    """

    device_name: str = "auto"
    precision_name: str = "auto"
    resume: bool = False
    overwrite: bool = False
    split: Path | None = None  # splits.csv, or a folder holding it; None: the output folder's
    cache_dir: Path | None = None  # the decoded-image cache; None: OUT_DIR/cache
    weights: Path | None = None  # Stage 3's byol.pt; None: OUT_DIR/byol.pt
    pretrained_elsewhere: bool = False  # Stage 3: the weights' pretraining never saw this split's images
    stop_after_epochs: int = 0
    snapshot_epochs: str = ""
    compile_mode: str = "off"
    time_budget_s: float = 0.0
    setting: str = ""

    def split_path(self, out_dir: Path) -> Path:
        return Path(self.split) if self.split is not None else Path(out_dir)

    def cache_path(self, out_dir: Path) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else Path(out_dir) / CACHE_DIR

    def weights_path(self, out_dir: Path) -> Path:
        return Path(self.weights) if self.weights is not None else Path(out_dir) / WEIGHTS_FILE


def add_input_arguments(parser, weights: bool = False) -> None:
    """--split and --cache-dir (and Stage 3's --weights): each defaults to its file in --out-dir."""
    parser.add_argument(
        "--split",
        type=Path,
        default=None,
        help="splits.csv from data_split.py (its split_config.json beside it), or the folder holding "
        "both; default: the ones in --out-dir",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="folder of the decoded-image cache (built there when missing; runs on one split may share "
        f"it); default: --out-dir/{CACHE_DIR}",
    )
    if weights:
        parser.add_argument(
            "--weights",
            type=Path,
            default=None,
            help=f"the pretrained backbone (train_byol.py's {WEIGHTS_FILE}, one of its snapshots, or a "
            f"backbone released by experiments/release_weights.py); default: --out-dir/{WEIGHTS_FILE}",
        )


def input_options(args) -> dict:
    """The RunOptions fields of add_input_arguments' flags (and Stage 3's --pretrained-elsewhere), from
    parsed arguments."""
    names = ("split", "cache_dir", "weights", "pretrained_elsewhere")
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def options_from_args(args, **more) -> RunOptions:
    """A driver's RunOptions from its parsed --device, --precision, --resume/--overwrite and input
    flags (those it has), with `more` fields (pretraining's) given by the caller."""
    return RunOptions(
        device_name=args.device,
        precision_name=args.precision,
        resume=args.resume,
        overwrite=args.overwrite,
        **input_options(args),
        **more,
    )
