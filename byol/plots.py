"""The report's figures, drawn from the CSVs the stages wrote (nothing is retrained); summary.md's
text is byol/report.py's.

One colour per init (random grey-orange, BYOL blue), one line style per quantity (train solid,
test dashed), mean over seeds with a +-1 std band, 150 dpi: readable in print.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from byol.files import atomic_path
from byol.outputs import monitor_label, monitor_split

INIT_COLOURS = {"random": "#d95f02", "byol": "#1f78b4"}
INIT_NAMES = {"random": "random init", "byol": "BYOL init"}
MODE_TITLES = {"finetune": "Full fine-tuning", "frozen": "Frozen backbone (linear head)"}
DPI = 150
CEILING_COLOUR = "#555555"


@dataclass(frozen=True)
class Ceiling:
    """The reference with every label (python experiments/ceiling.py): random init fine-tuned on all
    `n_train` images outside the held-out splits (validation, test) with their folder labels; its final
    test accuracy over `seeds` seeds."""

    n_train: int
    seeds: int
    epochs: int
    acc_mean: float
    acc_std: float

    @property
    def label(self) -> str:
        return f"ceiling: random init, all {self.n_train:,} folder labels (labels this setting lacks)"


def new_figure(panels: int = 2) -> tuple[Figure, list[Axes]]:
    """Panels side by side; a bare Figure (no pyplot), so no display or global state is involved."""
    figure = Figure(figsize=(6 * panels, 4.5))
    return figure, list(figure.subplots(1, panels, squeeze=False)[0])


def modes_in(frame: pd.DataFrame) -> list[str]:
    """The modes that were run, in panel order: one panel each (a run of one mode gets one panel)."""
    return [mode for mode in MODE_TITLES if mode in set(frame["mode"])]


def save_figure(figure: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")


def mean_std_band(axis: Axes, frame: pd.DataFrame, column: str, colour: str, style: str, label: str) -> None:
    """Mean over seeds of `column` per epoch, with a +-1 std band where there are 2+ seeds, clipped to
    the seeds' range: the band never reaches a value no seed had (one diverged seed's std would otherwise
    take a loss band below 0, stretching a log axis down to its floor)."""
    values = frame.dropna(subset=[column]).groupby("epoch")[column]
    mean, std = values.mean(), values.std().fillna(0)
    if mean.empty:
        return
    axis.plot(mean.index, mean.values, linestyle=style, color=colour, label=label, linewidth=1.8)
    low, high = (mean - std).clip(lower=values.min()), (mean + std).clip(upper=values.max())
    axis.fill_between(mean.index, low.values, high.values, color=colour, alpha=0.15, linewidth=0)


def main_setting(metrics: pd.DataFrame) -> pd.DataFrame:
    """The curves are drawn for the largest label count (the headline setting)."""
    return metrics[metrics["n_labels"] == metrics["n_labels"].max()]


def side_by_side(metrics: pd.DataFrame, draw, ylabel: str, title: str, log_y: bool = False) -> Figure:
    modes = modes_in(metrics)
    figure, axes = new_figure(len(modes))
    for axis, mode in zip(axes, modes):
        for init in [init for init in INIT_COLOURS if init in set(metrics["init"])]:
            draw(axis, metrics[(metrics["mode"] == mode) & (metrics["init"] == init)], init)
        axis.set_title(MODE_TITLES[mode])
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_ylabel(ylabel)
        if log_y:
            axis.set_yscale("log")
            # Plain numbers (0.5, 2) instead of 5×10⁻¹, on the decades and at 2, 3 and 5 times them.
            plain = FuncFormatter(lambda value, _: f"{value:g}")
            axis.yaxis.set_minor_locator(LogLocator(subs=(2, 3, 5)))
            axis.yaxis.set_major_formatter(plain)
            axis.yaxis.set_minor_formatter(plain)
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def describe(metrics: pd.DataFrame) -> str:
    seeds, n_labels = metrics["seed"].nunique(), int(metrics["n_labels"].max())
    return f"{n_labels} labels, mean ± std over {seeds} seeds" if seeds > 1 else f"{n_labels} labels, 1 seed"


def plot_loss_curves(metrics: pd.DataFrame, path: Path) -> None:
    metrics = main_setting(metrics)

    def draw(axis, frame, init):
        colour, name = INIT_COLOURS[init], INIT_NAMES[init]
        mean_std_band(axis, frame, "train_loss", colour, "-", f"{name}: train loss")
        mean_std_band(axis, frame, "test_loss", colour, "--", f"{name}: test loss")

    # Log scale: a pretrained init's first test losses (BatchNorm statistics from another task) can be
    # ten times the rest and would flatten every other curve on a linear axis.
    title = f"Loss curves ({describe(metrics)})"
    save_figure(side_by_side(metrics, draw, "cross-entropy loss (nats, log scale)", title, log_y=True), path)


def plot_accuracy(metrics: pd.DataFrame, n_classes: int, path: Path) -> None:
    metrics = main_setting(metrics)

    def draw(axis, frame, init):
        mean_std_band(axis, frame, "test_acc", INIT_COLOURS[init], "--", f"{INIT_NAMES[init]}: test accuracy")

    figure = side_by_side(
        metrics, draw, "test accuracy (fraction correct)", f"Test accuracy ({describe(metrics)})"
    )
    for axis in figure.axes:
        axis.axhline(1 / n_classes, color="black", linewidth=0.8, linestyle=":", label="chance")
        axis.legend(fontsize=8)
    save_figure(figure, path)


def plot_pretraining(byol_metrics: pd.DataFrame, path: Path) -> None:
    figure, (loss_axis, knn_axis) = new_figure()
    trained = byol_metrics.dropna(subset=["loss"])
    loss_axis.plot(trained["epoch"], trained["loss"], marker="o", color=INIT_COLOURS["byol"])
    loss_axis.set_title("BYOL loss")
    loss_axis.set_ylabel("loss, 2 views (2 − 2·cos, summed; range 0–8)")
    split = monitor_split(byol_metrics.columns)
    labelled_column = f"{split}_knn_labelled"
    knn = byol_metrics.dropna(subset=[labelled_column])
    knn_axis.plot(
        knn["epoch"],
        knn[labelled_column],
        marker="o",
        color=INIT_COLOURS["byol"],
        label="k-NN, the labelled split votes",
    )
    if not knn.empty:
        knn_axis.axhline(
            knn[labelled_column].iloc[0],
            color=INIT_COLOURS["random"],
            linestyle=":",
            label="at random init (epoch 0)",
        )
    # The diagnostic k-NN (thousands of voters with labels): absent from runs with --diag-voters 0.
    for column, style in ((f"{split}_knn_k20", "-"), (f"{split}_knn_k200", "-.")):
        diag = byol_metrics.dropna(subset=[column])
        if not diag.empty:
            k = column.rsplit("k", 1)[1]
            knn_axis.plot(
                diag["epoch"],
                diag[column],
                marker="^",
                linestyle=style,
                color="#33a02c",
                label=f"diagnostic k-NN, k={k} (pretraining images vote)",
            )
    knn_axis.set_title("Representation quality during pretraining")
    knn_axis.set_ylabel(f"k-NN accuracy on {monitor_label(split)}", fontsize=8)
    add_rank_axis(knn_axis, byol_metrics)
    for axis in (loss_axis, knn_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("pretraining epoch")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path)


def add_rank_axis(knn_axis: Axes, byol_metrics: pd.DataFrame) -> None:
    """The features' effective rank on a right-hand axis of the k-NN panel, and the panel's legend."""
    handles, labels = knn_axis.get_legend_handles_labels()
    ranks = byol_metrics.dropna(subset=["feature_rank"])  # empty for runs that did not record it
    if not ranks.empty:
        rank_axis = knn_axis.twinx()
        rank_axis.plot(
            ranks["epoch"],
            ranks["feature_rank"],
            marker="s",
            color="grey",
            linestyle="--",
            label="feature rank",
        )
        rank_axis.set_ylabel("feature rank (RankMe; 512 at most)")
        rank_axis.set_ylim(bottom=0)
        handles += rank_axis.get_legend_handles_labels()[0]
        labels += ["feature rank (right axis)"]
    # Below the panel: inside it, the legend hid the curves of the twin (rank) axis.
    knn_axis.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)


def accuracy_panel(axis: Axes, summary: pd.DataFrame, ceiling: Ceiling | None) -> None:
    """One mode's final test accuracy per init against the number of labels, and the `ceiling`."""
    for init, colour in INIT_COLOURS.items():
        rows = summary[summary["init"] == init].sort_values("n_labels")
        if rows.empty:
            continue
        axis.errorbar(
            rows["n_labels"],
            rows["test_acc_mean"],
            yerr=rows["test_acc_std"].fillna(0),
            marker="o",
            capsize=3,
            color=colour,
            label=INIT_NAMES[init],
        )
    if ceiling is not None:
        axis.axhline(ceiling.acc_mean, color=CEILING_COLOUR, linestyle="--", label=ceiling.label)
        if math.isfinite(ceiling.acc_std):
            low, high = ceiling.acc_mean - ceiling.acc_std, ceiling.acc_mean + ceiling.acc_std
            axis.axhspan(low, high, color=CEILING_COLOUR, alpha=0.12, linewidth=0)
    axis.set_ylabel("final test accuracy (mean ± std over seeds)")


def difference_panel(axis: Axes, paired: pd.DataFrame) -> None:
    """One mode's BYOL − random per number of labels, with the wider of its two 95 % intervals."""
    here = paired.sort_values("n_labels")
    low, high = here["low"].to_numpy(), here["high"].to_numpy()
    mean = here["diff_mean"].to_numpy()
    axis.errorbar(
        here["n_labels"],
        mean,
        yerr=[(mean - low), (high - mean)],
        marker="o",
        capsize=3,
        color=INIT_COLOURS["byol"],
        label="BYOL − random (paired; wider 95 % interval)",
    )
    axis.axhline(0, color="black", linewidth=0.8, linestyle=":")
    axis.set_ylabel("test accuracy difference")


def plot_label_efficiency(
    summary: pd.DataFrame, paired: pd.DataFrame, path: Path, ceiling: Ceiling | None = None
) -> None:
    """Per mode: final test accuracy against the number of labels (top, with the `ceiling` as a
    reference line when given), and BYOL − random paired over seeds with its 95 % interval (bottom,
    when both inits ran)."""
    modes = modes_in(summary)
    rows = 2 if not paired.empty else 1
    figure = Figure(figsize=(6 * len(modes), 4.5 * rows))
    grid = figure.subplots(rows, len(modes), squeeze=False)
    labels = sorted(summary["n_labels"].unique())
    for column, mode in enumerate(modes):
        accuracy_panel(grid[0][column], summary[summary["mode"] == mode], ceiling)
        grid[0][column].set_title(MODE_TITLES[mode])
        if rows == 2:
            difference_panel(grid[1][column], paired[paired["mode"] == mode])
            grid[1][column].set_title(f"{MODE_TITLES[mode]}: BYOL − random, 95 % interval")
        for axis in [grid[r][column] for r in range(rows)]:
            axis.set_xscale("log")
            axis.set_xticks(labels)
            axis.set_xticklabels([str(n) for n in labels])
            axis.xaxis.set_minor_formatter(NullFormatter())  # log axes label minor ticks (3×10¹...) too
            axis.set_xlabel("labelled images (log scale)")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
    figure.suptitle("Label efficiency")
    figure.tight_layout()
    save_figure(figure, path)


def short_count(images: float) -> str:
    """22464 -> '22k', 1797120 -> '1.8M': a tick label."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if images >= size:
            return f"{images / size:.2g}{suffix}" if images < 10 * size else f"{images / size:.0f}{suffix}"
    return f"{images:.0f}"


TICK_PAD_PX = 4  # the least room between two tick labels, in pixels at the figure's dpi


RUN_COLOURS = ("#1f78b4", "#e31a1c", "#33a02c", "#6a3d9a")


def plot_monitor_overlay(runs: list[tuple[str, pd.DataFrame, int]], path: Path) -> None:
    """Several pretraining runs' monitors (name, byol_metrics.csv, global batch) against the images
    each had seen: the diagnostic k-NN at k=20 (left) and the k-NN the labelled split votes (right),
    each run in its own colour, named with the split its k-NN classified, so that the run-to-run
    spread can be seen."""
    figure, axes = new_figure()
    for (name, metrics, global_batch), colour in zip(runs, RUN_COLOURS):
        split = monitor_split(metrics.columns)
        images = metrics["step"] * global_batch
        for axis, column in zip(axes, (f"{split}_knn_k20", f"{split}_knn_labelled")):
            scored = metrics[column].notna()
            axis.plot(
                images[scored],
                metrics.loc[scored, column],
                marker=".",
                color=colour,
                label=f"{name} ({monitor_label(split).split(' (')[0]})",
            )
    titles = ("diagnostic k-NN, k=20 (5,000 pretraining images vote)", "k-NN, the labelled split votes")
    for axis, title in zip(axes, titles):
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("images seen in pretraining")
        axis.set_ylabel("k-NN accuracy on the held-out split")
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: short_count(value)))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)


def plot_views(images, views, generator, path: Path) -> None:
    """byol_views.png: a few cached images beside their two augmented views, as pretraining sees them.

    `images` (N, 3, S, S) uint8 on any device (training keeps its cache on the GPU); `views` a
    BYOLViews; `generator` on the device to draw them on. Views are drawn without normalisation, which
    is the same as denormalising them.
    """
    import torch
    import torch.nn.functional as F

    batch = images.to(generator.device)  # the views' parameters are drawn on the generator's device
    view_1, view_2 = views(batch, generator, normalize=False)
    originals = F.interpolate(batch.float() / 255, size=view_1.shape[-2:], mode="bilinear", antialias=True)
    figure = Figure(figsize=(6, 2 * len(batch)), layout="constrained")
    axes = figure.subplots(len(batch), 3, squeeze=False)
    for row, panels in enumerate(zip(originals, view_1, view_2)):
        for column, (image, title) in enumerate(zip(panels, ("cached image", "view 1", "view 2"))):
            axis = axes[row][column]
            axis.imshow(torch.clamp(image, 0, 1).permute(1, 2, 0).cpu().numpy())
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title)
    figure.suptitle(f"BYOL views at {view_1.shape[-1]} px (each image draws its own parameters)")
    save_figure(figure, path)
