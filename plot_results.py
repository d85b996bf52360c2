"""Stage 4: the report — side-by-side loss curves, accuracy, BYOL pretraining, label efficiency, summary.md.

Also what the optional tools left in --out-dir: the compute curve (compute_curve.csv) and the ceiling
(ceiling_metrics.csv).

Reads only the CSV/JSON files the earlier stages wrote in --out-dir (nothing is retrained), so
it regenerates every committed figure and table from committed files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from byol.cli import StageArgumentParser, add_out_dir_argument, run_stage
from byol.data import SPLIT_CONFIG_FILE
from byol.errors import UserError
from byol.files import read_csv, read_json, write_text
from byol.outputs import (
    BYOL_CONFIG_FILE,
    BYOL_METRIC_COLUMNS,
    BYOL_METRICS_FILE,
    CLASSIFIER_CONFIG_FILE,
    CLASSIFIER_METRIC_COLUMNS,
    CLASSIFIER_METRICS_FILE,
    CURVE_COLUMNS,
    CURVE_FIGURE,
    CURVE_FILE,
    PREDICTION_INDEX,
    PREDICTIONS_FILE,
    read_monitor_table,
)
from byol.plots import plot_accuracy, plot_label_efficiency, plot_loss_curves, plot_pretraining
from byol.plots_curve import plot_compute_curve
from byol.report import (
    pretraining_markdown,
    read_ceiling,
    scoring_text,
    settings_markdown,
    stage_seconds,
    summary_markdown,
    wall_clock_markdown,
)
from byol.report_curve import curve_markdown
from byol.stats import paired_summary, rate_limits, summarize


def get_args_parser() -> argparse.ArgumentParser:
    parser = StageArgumentParser(description=__doc__)
    add_out_dir_argument(parser, "reads the CSVs, writes PNGs here")
    return parser


def read_json_if_present(path: Path) -> dict:
    return read_json(path, f"re-run the stage that writes {path.name}") if path.is_file() else {}


def main() -> None:
    out_dir = get_args_parser().parse_args().out_dir
    metrics_path = out_dir / CLASSIFIER_METRICS_FILE
    byol_metrics = curve = None
    if (out_dir / BYOL_METRICS_FILE).is_file():
        remedy = "run train_byol.py again or delete it"
        byol_metrics = read_monitor_table(out_dir / BYOL_METRICS_FILE, BYOL_METRIC_COLUMNS, remedy)
    if (out_dir / CURVE_FILE).is_file():  # python experiments/compute_curve.py's table
        remedy = "run python experiments/compute_curve.py again or delete it"
        curve = read_monitor_table(out_dir / CURVE_FILE, CURVE_COLUMNS, remedy)
    metrics = None  # every input is read before anything is drawn: a damaged one leaves no half report
    if metrics_path.is_file():
        remedy = f"run train_classifier.py --out-dir {out_dir} again"
        metrics = read_csv(metrics_path, CLASSIFIER_METRIC_COLUMNS, remedy)
        if metrics.empty:
            raise UserError(f"{metrics_path} has no rows: run train_classifier.py again")
    elif byol_metrics is None and curve is None:
        raise UserError(f"{metrics_path} not found: run train_classifier.py --out-dir {out_dir} first")
    byol_config = read_json_if_present(out_dir / BYOL_CONFIG_FILE)
    written = []
    if byol_metrics is not None:
        written.append(out_dir / "byol_pretraining.png")
        plot_pretraining(byol_metrics, written[-1])
    if curve is not None:
        written.append(out_dir / CURVE_FIGURE)
        plot_compute_curve(curve, written[-1])
    sections = (pretraining_markdown(byol_metrics, byol_config) if byol_metrics is not None else "") + (
        curve_markdown(curve) if curve is not None else ""
    )
    if metrics is not None:
        markdown = comparison_report(out_dir, metrics, byol_metrics, byol_config, sections, written)
    else:  # a pretraining in progress: its own report, the comparison to come
        markdown = (
            f"# BYOL pretraining\n\nNo comparison yet: {metrics_path.name} is not here "
            f"(run train_classifier.py --out-dir {out_dir}).\n"
            f"{sections}{settings_markdown(None, byol_config)}"
        )
    written.append(out_dir / "summary.md")
    write_text(written[-1], markdown)
    print("\n".join(f"wrote {path}" for path in written))


def comparison_report(
    out_dir: Path, metrics, byol_metrics, byol_config: dict, sections: str, written: list[Path]
) -> str:
    """The comparison's figures (appended to `written`) and its summary.md, `sections` included."""
    classifier_config = read_json_if_present(out_dir / CLASSIFIER_CONFIG_FILE)
    predictions_path = out_dir / PREDICTIONS_FILE
    predictions = (
        read_csv(predictions_path, PREDICTION_INDEX, "run train_classifier.py again")
        if predictions_path.is_file()
        else None
    )
    summary = summarize(metrics, rate_limits(classifier_config))
    paired = paired_summary(metrics, predictions)
    n_classes = len(read_json_if_present(out_dir / SPLIT_CONFIG_FILE).get("classes", [0, 1]))
    written += [out_dir / "loss_curves.png", out_dir / "accuracy.png"]
    plot_loss_curves(metrics, written[-2])
    plot_accuracy(metrics, n_classes, written[-1])
    ceiling = read_ceiling(out_dir)
    if summary["n_labels"].nunique() > 1:
        written.append(out_dir / "label_efficiency.png")
        plot_label_efficiency(summary, paired, written[-1], ceiling)
    return (
        summary_markdown(summary, paired, ceiling, scoring_text(classifier_config))
        + sections
        + wall_clock_markdown(stage_seconds(byol_metrics, metrics))
        + settings_markdown(classifier_config or None, byol_config)
    )


if __name__ == "__main__":
    run_stage(main)
