"""Stage 3's --resume ledger: which runs of an earlier classifier_metrics.csv (and their predictions) a
grid keeps, refused in one line when the split, the pretraining or a setting differs."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd

from byol.classifier_config import ClassifierConfig
from byol.errors import UserError
from byol.files import read_csv, read_json
from byol.outputs import (
    CLASSIFIER_CONFIG_FILE,
    CLASSIFIER_METRIC_COLUMNS,
    CLASSIFIER_METRICS_FILE,
    PREDICTION_INDEX,
    PREDICTIONS_FILE,
)
from byol.resume import check_resumable


def frozen_only_settings(config: ClassifierConfig) -> tuple[str, ...]:
    """Settings only the frozen runs depend on: --resume with other values retrains those runs and
    keeps the rest. With --lp-ft the fine-tuning runs start from the probe, so none."""
    return () if config.lp_ft else ("probe_lrs", "bn_images")


# What a grid did before each of these settings existed, for classifier_config.json files that lack
# them: no widened rate grids, no BatchNorm recalibration, one labelled set at the split's count, scored
# on the test split. A resume with today's defaults trains differently, so it is refused (naming the
# flag) unless these values are given; any other missing setting had its default's behaviour.
BEFORE_THE_SETTING = {
    "widen_rates": 0,
    "bn_images": 0,
    "labelled_sets": "split",
    "score_split": "test",
    "evaluation": "test",
}


SAME_SETTINGS = "resume with the same settings, or start over with --overwrite"


def earlier_ledger(
    metrics_path: Path, config_path: Path, columns: list[str]
) -> tuple[pd.DataFrame, dict] | None:
    """The one resume ledger of the grids (Stage 3's runs, the ceiling's seeds): an earlier run's rows
    (`metrics_path`, written after every run) and the settings they were trained with (`config_path`),
    which the caller checks with check_resumable; None when there is no earlier run. Rows whose settings
    are lost are refused: nothing says what they were trained with."""
    if not metrics_path.is_file():
        return None
    if not config_path.is_file():
        raise UserError(
            f"--resume: {config_path} is missing, so the settings of {metrics_path} are unknown; "
            "start over with --overwrite"
        )
    previous = read_json(config_path, "start over with --overwrite")
    return read_csv(metrics_path, columns, "start over with --overwrite"), previous


def finished_rows(
    config: ClassifierConfig, out_dir: Path, byol_config: dict, world_size: int, splits_sha256: str
) -> list[dict]:
    """--resume: the metrics rows of the earlier run in `out_dir` that this one keeps.

    Refused (one line) when the earlier run trained on another split or another byol.pt, or with
    another setting or number of processes; a change of the frozen-only settings keeps the
    fine-tuning runs only. A random-init-only run (no byol.pt needed) resumes with --inits
    random,byol: its rows are kept and the BYOL runs added, so the random half of a study can train
    while the pretraining still runs.
    """
    metrics_path, config_path = out_dir / CLASSIFIER_METRICS_FILE, out_dir / CLASSIFIER_CONFIG_FILE
    ledger = earlier_ledger(metrics_path, config_path, CLASSIFIER_METRIC_COLUMNS)
    if ledger is None:
        return []
    frame, previous = ledger
    settings = {
        key: value
        for key, value in asdict(config).items()
        if key not in ("inits", "modes", "seeds", "n_labels")
    }
    settings["world_size"] = world_size  # with batch_size, fixes the global batch
    if previous.get("splits_sha256", splits_sha256) != splits_sha256:  # files before 2026-12-05 lack it
        raise UserError(
            f"--resume: {metrics_path} was trained on another split (splits.csv's sha256 differs); "
            "start over with --overwrite"
        )
    if (previous.get("byol_config") or byol_config) != byol_config:  # {}: no BYOL runs before
        raise UserError(
            f"--resume: {metrics_path} was trained on another pretraining (byol.pt's settings differ); "
            "start over with --overwrite"
        )
    before = {**asdict(ClassifierConfig()), **BEFORE_THE_SETTING}
    changed = check_resumable(
        metrics_path, previous, settings, SAME_SETTINGS, frozen_only_settings(config), before
    )
    rows = frame.to_dict("records")
    if changed:  # only the linear probes' settings: keep the fine-tuning runs, retrain the probes
        rows = [row for row in rows if row["mode"] != "frozen"]
    return rows


def kept_predictions(out_dir: Path, finished: set[str]) -> dict[str, dict[int, int]]:
    """--resume: the earlier classifier_predictions.csv's columns of the runs kept (`finished`, trained
    on the same split: finished_rows checked), as {cache row: predicted class}; {} without one (a study
    from before the file: no bootstrap for those runs)."""
    path = out_dir / PREDICTIONS_FILE
    if not path.is_file():
        return {}
    table = read_csv(path, PREDICTION_INDEX, "start over with --overwrite")
    return {
        column: {int(row): int(value) for row, value in zip(table["row"], table[column]) if value == value}
        for column in table.columns
        if column in finished
    }
