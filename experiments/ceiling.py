"""The ceiling, for scale: random-init fine-tuning on every pretraining image, with its folder label.

It uses labels the low-label setting does not have (the unlabelled split's Cat/Dog folder names), so it
is not a competitor but the top of the scale: a reader sees how much of the gap between a few hundred
labels and all of them BYOL closes. Trained as stage 3 fine-tunes (the light augmentation, AdamW with
cosine decay, a new linear head at --head-lr) at the view size of RUN_DIR's byol_config.json when there
is one, and scored on the same held-out test split.

    python experiments/ceiling.py RUN_DIR [--out-dir results] [--seeds 2] [--epochs 20] [--finetune-lrs 1e-3]

RUN_DIR: a folder with data_split.py's split (its image cache is built there when missing). With
several --finetune-lrs the rate is chosen on the split's validation images (each candidate fine-tunes
seed 0 for the whole budget; a choice on the grid's edge tries the next rate past it, up to
--widen-rates times), or, for a split without validation images, by --finetune-folds-fold
cross-validation on the training images; never on the test split. Writes
ceiling_metrics.csv (a row per seed and epoch) and ceiling_config.json to --out-dir after every seed,
and ceiling_choices.csv (each candidate's rate, length and validation score) after every candidate;
--resume keeps the seeds and the candidates already done (the candidates under another grid too: each
is one fine-tuning at its rate and length). plot_results.py then draws the ceiling in
label_efficiency.png and adds it to summary.md.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from byol.cache import load_cache
from byol.classifier_config import ClassifierConfig
from byol.classifier_flags import add_classifier_flags, config_from_args
from byol.cli import (
    StageArgumentParser,
    add_batch_and_device_arguments,
    add_resume_arguments,
    run_stage,
)
from byol.cross_validation import choose_rate_then_length
from byol.data import SPLIT_CONFIG_FILE, labelled_rows, read_split
from byol.device import resolve_precision
from byol.distributed import Runtime, process_group
from byol.errors import UserError
from byol.files import read_json, write_csv, write_json
from byol.finetune import Examples, Job, Task, choose_finetune, fine_tune, make_backbone
from byol.grid_plan import (
    GridWork,
    choice_lengths,
    choice_text,
    finetune_lengths,
    grid_seconds,
    measure_grid_speed,
)
from byol.grid_resume import SAME_SETTINGS, earlier_ledger
from byol.outputs import (
    BYOL_CONFIG_FILE,
    CEILING_CHOICE_COLUMNS,
    CEILING_CHOICES_FILE,
    CEILING_COLUMNS,
    CEILING_CONFIG_FILE,
    CEILING_METRICS_FILE,
)
from byol.resume import check_fresh_start, check_resumable
from byol.run_options import CACHE_DIR, RunOptions, options_from_args
from byol.timing import finish_time, format_duration

log = logging.getLogger(__name__)

TRAIN_SPLITS = ("labelled", "unlabelled")  # every pretraining image: validation and test held out


@dataclass(frozen=True)
class CeilingRun:
    """What every seed shares: the settings, the images (every pretraining row, then the test rows)."""

    config: ClassifierConfig
    train: Examples
    test: Examples
    n_classes: int
    runtime: Runtime
    validation: Examples | None = None  # the split's validation images, which choose the rate


def resolved_settings(
    config: ClassifierConfig, run_dir: Path, world_size: int
) -> tuple[ClassifierConfig, dict]:
    """The config with its sizes filled in from RUN_DIR's byol_config.json (when there is one), and
    the settings a resumed run must share: all but --seeds, the number of processes, and the split
    (splits.csv's hash in split_config.json; read_split checks the two agree before anything trains).
    Needs no images: a finished ceiling resumes to "nothing to train" on a clone without them."""
    byol_config_path = run_dir / BYOL_CONFIG_FILE
    byol_config = read_json(byol_config_path, "re-run train_byol.py") if byol_config_path.is_file() else {}
    config = config.resolved(byol_config)
    split_config = run_dir / SPLIT_CONFIG_FILE
    if not split_config.is_file():
        read_split(run_dir)  # its one-line error: no split in RUN_DIR
    settings = {key: value for key, value in asdict(config).items() if key != "seeds"}
    settings["world_size"] = world_size
    settings["splits_sha256"] = read_json(split_config, "re-run data_split.py").get("splits_sha256")
    return config, settings


def load_run(config: ClassifierConfig, run_dir: Path, runtime: Runtime) -> CeilingRun:
    """The split's images: every pretraining row with its folder label, and the test rows."""
    split = read_split(run_dir)
    train_rows, test_rows = labelled_rows(split, *TRAIN_SPLITS), split.indices("test")
    if not test_rows or not train_rows:
        raise UserError(f"{run_dir}: the split needs test and non-test images; re-run data_split.py")
    images = load_cache(split, run_dir / CACHE_DIR, config.cache_size, torch.device("cpu"), runtime.ranks)
    labels = torch.tensor(split.table["label"].to_numpy())
    examples = Examples(images, labels)
    validation_rows = split.indices("validation")
    validation = examples[validation_rows] if validation_rows else None
    return CeilingRun(
        config, examples[train_rows], examples[test_rows], len(split.classes), runtime, validation
    )


def choose_rate_and_length(
    run: CeilingRun, progress: tqdm, tried: list[dict], record, planned_epochs: int = 0
) -> tuple[float, int]:
    """The backbone rate and, with two or more --finetune-epochs, the run length: with validation
    images, each candidate rate (the grid, widened past an edge it chooses: widened_grid) fine-tunes
    seed 0 on every training image for --epochs and is scored on the validation split, then each
    length at the chosen rate (widened the same way); without validation images, --finetune-folds-fold
    cross-validation on the training images (choose_finetune). The test split plays no part either way.
    `tried`: candidates scored by an earlier, interrupted run with the same settings (read back, not
    trained again); `record(row)` keeps each new one as it finishes. `progress` counts the candidates'
    epochs, `planned_epochs` of which its total holds already (a candidate past an edge adds its own)."""
    config = run.config
    job = Job(0, config, run.runtime, progress)
    if run.validation is None:
        return choose_finetune("random", None, run.train, run.n_classes, job)

    earlier = {(row["lr"], int(row["epochs"])): (row["val_acc"], -row["val_loss"]) for row in tried}

    def score(lr: float, epochs: int) -> tuple[float, float]:
        nonlocal planned_epochs  # the candidates' epochs in the bar's total, not trained yet
        if (lr, epochs) in earlier:
            return earlier[(lr, epochs)]
        progress.set_description(f"ceiling, choosing on validation: rate {lr:g}, {epochs} epochs")
        if epochs > planned_epochs:  # a candidate past an edge, not in the plan: the bar's end moves
            progress.total += epochs - planned_epochs
            progress.refresh()
        planned_epochs = max(0, planned_epochs - epochs)
        task = Task(run.train, run.validation, run.n_classes)
        trial = replace(job.trial(finetune_lrs=[lr], epochs=epochs), progress=progress, count_epochs=True)
        last = fine_tune(make_backbone("random", 0, None), task, trial)[-1]
        record({"lr": lr, "epochs": epochs, "val_acc": last["test_acc"], "val_loss": last["test_loss"]})
        return last["test_acc"], -last["test_loss"]

    choice = choose_rate_then_length(config, score)
    progress.write(f"ceiling: fine-tuning {choice.text(with_rate=True)}, chosen by validation accuracy")
    return choice.lr, choice.epochs


# What --resume may change and still keep the earlier candidates: the seeds and the choice's grids (a
# candidate is one fine-tuning at its rate and length, whatever grid asked for it: a wider grid reuses it,
# a grid widened once more trains only the new one). The seeds' rows need every setting alike.
CANDIDATES_MAY_CHANGE = ("seeds", "epochs", "finetune_lrs", "finetune_epochs", "widen_rates")


def kept_rows(
    path: Path,
    settings: dict,
    resume: bool,
    columns: list[str] = CEILING_COLUMNS,
    may_change: tuple[str, ...] = (),
) -> list[dict]:
    """--resume: the rows an earlier run with the same settings (but those in `may_change`) finished
    (ceiling_metrics.csv: its seeds; ceiling_choices.csv: its candidates)."""
    if not resume:
        return []
    ledger = earlier_ledger(path, path.with_name(CEILING_CONFIG_FILE), columns)
    if ledger is None:
        return []
    rows, previous = ledger
    # A setting added since the file was written counts as its default (none changes a ceiling's runs).
    defaults = {**asdict(ClassifierConfig()), "world_size": settings["world_size"]}
    check_resumable(path, previous, settings, SAME_SETTINGS, may_change, defaults)
    return rows.to_dict("records")  # written after each seed or candidate: every one in them is complete


def plan_line(run: CeilingRun, pending: list[int], choose: bool) -> str:
    """What is left to train and how long it will take at the speed measured here."""
    config, runtime = run.config, run.runtime
    speed = measure_grid_speed(run.train, run.n_classes, config, runtime)
    n_train = len(run.train)
    longest = max(finetune_lengths(config))  # before a choice, the longest it may pick
    work = GridWork(n_test=len(run.test), finetune_runs=[(n_train, longest)] * len(pending))
    if choose and run.validation is not None:  # each candidate: a whole fine-tuning, scored once
        work.finetune_runs += [(n_train, epochs) for epochs in choice_lengths(config)]
        choice = f" and a choice on the validation split ({choice_text(config)}, more past an edge)"
    elif choose:
        work.choices[("ceiling",)] = n_train
        choice = f" and a choice ({choice_text(config)} x {config.finetune_folds} folds)"
    seconds = grid_seconds(speed, config, config.batch_size * runtime.ranks.world_size, work)
    choice = choice if choose else ""
    up_to = "up to " if choose and len(config.finetune_epochs) > 1 else ""
    return (
        f"plan: {len(pending)} seed(s) x {up_to}{longest} epochs of {n_train} images{choice}, "
        f"{runtime.precision} on {runtime.device}. Measured here: {speed.step_seconds:.2f} s per step of "
        f"{config.batch_size * runtime.ranks.world_size}; about {format_duration(seconds)}, finishing "
        f"about {finish_time(seconds)}"
    )


def train_ceiling(
    config: ClassifierConfig, run_dir: Path, out_dir: Path, options: RunOptions
) -> pd.DataFrame:
    """Fine-tune every seed not yet done, writing the metrics after each; returns all rows."""
    metrics_path = out_dir / CEILING_METRICS_FILE
    choices_path = out_dir / CEILING_CHOICES_FILE
    check_fresh_start(
        out_dir, (CEILING_METRICS_FILE, CEILING_CHOICES_FILE), options.resume, options.overwrite
    )
    with process_group(options.device_name) as (ranks, device):
        runtime = Runtime(device, resolve_precision(options.precision_name, device), ranks)
        config, settings = resolved_settings(config, run_dir, ranks.world_size)
        rows = kept_rows(metrics_path, settings, options.resume)
        tried = kept_rows(
            choices_path, settings, options.resume, CEILING_CHOICE_COLUMNS, CANDIDATES_MAY_CHANGE
        )
        if not options.resume and ranks.is_main and choices_path.is_file():
            choices_path.unlink()  # --overwrite: an earlier run's candidates are not this run's
        pending = [seed for seed in range(config.seeds) if seed not in {row["seed"] for row in rows}]
        if not pending:
            log.info(f"plan: all {config.seeds} seed(s) already done in {metrics_path}; nothing to train")
            return pd.DataFrame(rows, columns=CEILING_COLUMNS)
        if ranks.is_main:
            write_json(out_dir / CEILING_CONFIG_FILE, {**settings, "precision": runtime.precision})
        run = load_run(config, run_dir, runtime)
        choose = bool(choice_lengths(config)) and not rows
        log.info(plan_line(run, pending, choose))  # on every rank: the speed is measured on all
        lr, epochs = config.finetune_lrs[0], finetune_lengths(config)[0]
        if rows:  # the rate and length the seeds already done trained at
            lr, epochs = (
                rows[0]["backbone_lr"],
                max(row["epoch"] for row in rows if row["seed"] == rows[0]["seed"]),
            )
        # One bar for the whole ceiling: the choice's candidates (those not scored yet, before any
        # widening), then the seeds, counted in epochs of every training image.
        to_choose = sum(choice_lengths(config)) - sum(int(row["epochs"]) for row in tried) if choose else 0
        to_choose = max(0, to_choose)
        progress = tqdm(
            desc="ceiling",
            unit="epoch",
            total=to_choose + len(pending) * (max(finetune_lengths(config)) if choose else epochs),
            disable=not ranks.is_main,
        )
        if choose:
            if tried:
                log.info(f"--resume: {len(tried)} candidate(s) already scored in {choices_path}, kept")

            def record(row: dict) -> None:
                tried.append(row)
                if ranks.is_main:
                    write_csv(choices_path, pd.DataFrame(tried, columns=CEILING_CHOICE_COLUMNS))

            lr, epochs = choose_rate_and_length(run, progress, tried, record, to_choose)
        progress.total = progress.n + len(pending) * epochs  # the seeds, at the length chosen or given
        progress.refresh()
        if ranks.is_main:  # the length the seeds train for, chosen or given: what a finished seed reaches
            write_json(
                out_dir / CEILING_CONFIG_FILE,
                {**settings, "precision": runtime.precision, "run_epochs": epochs},
            )
        run = replace(run, config=replace(config, finetune_lrs=[lr], epochs=epochs))
        for seed in pending:
            rows += train_seed(run, seed, progress)
            if ranks.is_main:
                write_csv(metrics_path, pd.DataFrame(rows, columns=CEILING_COLUMNS))
        progress.close()
        log.info(f"wrote {metrics_path}")
    return pd.DataFrame(rows, columns=CEILING_COLUMNS)


def train_seed(run: CeilingRun, seed: int, progress: tqdm) -> list[dict]:
    """One seed's metrics rows: a fresh random backbone fine-tuned at run.config's one rate."""
    progress.set_description(f"ceiling seed {seed}")
    job = Job(seed, run.config, run.runtime, progress, count_epochs=True)
    rows = fine_tune(make_backbone("random", seed, None), Task(run.train, run.test, run.n_classes), job)
    return [{"seed": seed, "n_train": len(run.train), **row} for row in rows]


# The ceiling's own defaults; every other setting is ClassifierConfig's (Stage 3's fine-tuning).
CEILING = ClassifierConfig(
    inits=["random"], modes=["finetune"], seeds=2, epochs=20, eval_every=2, finetune_lrs=[1e-3], batch_size=64
)
CEILING_FLAGS = ("seeds", "epochs", "eval_every", "finetune_lrs", "finetune_epochs", "finetune_folds")
CEILING_FLAGS += ("widen_rates", "head_lr", "image_size")
CEILING_HELP = {
    "finetune_lrs": "the backbone's AdamW rate (default {default}); a comma list is chosen on the "
    "validation split (or by cross-validation on the training images, for a split without validation images)",
    "finetune_epochs": "the run's length chosen like its rate, after it, from these epoch counts (e.g. "
    "20,40; widened past an edge like the rates; default: --epochs, no choice)",
    "image_size": "px; default: RUN_DIR's byol_config.json's, else Stage 2's default",
}


def get_args_parser() -> StageArgumentParser:
    parser = StageArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path, help="a data_split.py --out-dir (the study's split)")
    parser.add_argument(
        "--out-dir", type=Path, default=Path("results"), help="writes ceiling_metrics.csv here"
    )
    add_classifier_flags(parser, CEILING, CEILING_FLAGS, CEILING_HELP)
    add_batch_and_device_arguments(parser, CEILING.batch_size)
    add_resume_arguments(parser, "keep the seeds already complete in ceiling_metrics.csv and train the rest")
    return parser


def main() -> None:
    args = get_args_parser().parse_args()
    config = config_from_args(args, CEILING, CEILING_FLAGS)
    metrics = train_ceiling(config, args.run_dir, args.out_dir, options_from_args(args))
    final = metrics.loc[metrics.groupby("seed")["epoch"].idxmax()]
    print(final[["seed", "n_train", "test_acc", "backbone_lr"]].to_string(index=False))


if __name__ == "__main__":
    run_stage(main)
