"""The compute curve's figure: k-NN and frozen probe per snapshot of a long pretraining, against images
seen and hours, beside random init (experiments/compute_curve.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from byol.outputs import monitor_split
from byol.plots import INIT_COLOURS, TICK_PAD_PX, save_figure, short_count


def short_hours(hours: float) -> str:
    return f"{hours:.2f}" if hours < 1 else f"{hours:.1f}" if hours < 10 else f"{hours:.0f}"


def blank_crowded_labels(axis) -> None:
    """Blanks each tick label of `axis` (an x axis) that its right-hand neighbour would print over, as
    laid out at the figure's size, so that snapshots close together (epochs 24, 28, 32; 64 and 86) do
    not print over each other. The last snapshot, the one a reader looks for, keeps its label."""
    axis.figure.draw_without_rendering()
    labels = axis.get_majorticklabels()
    texts, left_of_kept = [label.get_text() for label in labels], math.inf
    for index in range(len(labels) - 1, -1, -1):
        box = labels[index].get_window_extent()
        if box.x1 + TICK_PAD_PX > left_of_kept:
            texts[index] = ""
        else:
            left_of_kept = box.x0
    axis.set_ticklabels(texts)


def label_snapshots(axis, images: np.ndarray, hours: np.ndarray) -> None:
    """Ticks at the snapshots only: images seen below, the hours of pretraining they took above."""
    axis.set_xticks(images, [short_count(value) for value in images])
    axis.xaxis.set_minor_locator(NullLocator())
    top = axis.twiny()
    top.set_xscale("log")
    top.set_xlim(axis.get_xlim())
    top.set_xticks(images, [short_hours(value) for value in hours])
    top.xaxis.set_minor_locator(NullLocator())
    top.set_xlabel("hours of pretraining on this machine")
    for drawn in (axis, top):
        blank_crowded_labels(drawn.xaxis)


def plot_compute_curve(table: pd.DataFrame, path: Path) -> None:
    """Accuracy against images seen (log x; the random init, seen 0 images, as horizontal lines).
    Drawn from compute_curve.csv alone, so plot_results.py redraws it too."""
    n_labels = int(table["probe_n_labels"].iloc[0])
    figure = Figure(figsize=(7.5, 4.8))
    axis = figure.subplots()
    trained, start = table[table["epoch"] > 0], table[table["epoch"] == 0].iloc[0]
    colour, knn = INIT_COLOURS["byol"], f"{monitor_split(table.columns)}_knn_k20"
    axis.plot(trained["images_seen"], trained[knn], "o-", color=colour, label="BYOL: k-NN, 5,000 voters")
    axis.axhline(start[knn], color=colour, linestyle=":", label="random init: k-NN, 5,000 voters")
    errors = np.vstack(
        [
            trained["probe_diff"] - trained["probe_diff_low"],
            trained["probe_diff_high"] - trained["probe_diff"],
        ]
    )
    probe_colour = "#33a02c"
    axis.errorbar(
        trained["images_seen"],
        trained["probe_byol"],
        yerr=np.nan_to_num(errors),
        fmt="s-",
        color=probe_colour,
        capsize=3,
        label=f"BYOL: frozen probe, {n_labels} labels (paired 95 % interval)",
    )
    axis.axhline(
        start["probe_random"],
        color=INIT_COLOURS["random"],
        linestyle="--",
        label="random init: frozen probe",
    )
    axis.set_xscale("log")
    axis.set_xlabel("pretraining images seen")
    axis.set_ylabel("test accuracy")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="best")
    axis.set_title("What more BYOL pretraining buys")
    label_snapshots(axis, trained["images_seen"].to_numpy(float), trained["hours"].to_numpy(float))
    save_figure(figure, path)
