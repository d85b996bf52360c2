"""The report's table (byol/plots.py), from a metrics table written by hand."""

from __future__ import annotations

import pandas as pd

from byol.comparison import format_summary, summarize
from byol.plots import summary_markdown


def final_metrics(accuracies: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    """One final epoch per seed for each (init, mode): the rows summarize() reads."""
    rows = [
        {
            "init": init,
            "mode": mode,
            "seed": seed,
            "n_labels": 250,
            "epoch": 30,
            "test_acc": acc,
            "test_loss": 0.7,
        }
        for (init, mode), accs in accuracies.items()
        for seed, acc in enumerate(accs)
    ]
    return pd.DataFrame(rows)


def test_one_seed_is_shown_without_a_spread_rather_than_plus_minus_zero():
    summary = summarize(
        final_metrics(
            {
                ("random", "finetune"): [0.60],
                ("byol", "finetune"): [0.70],
                ("random", "frozen"): [0.50, 0.54],
                ("byol", "frozen"): [0.58, 0.62],
            }
        )
    )
    table = summary_markdown(summary, {}, None)
    assert "| 250 | finetune | random | 0.600 (one seed: no spread) | 1 | 30 |" in table
    assert "| 250 | frozen | byol | 0.600 ± 0.028 | 2 | 30 |" in table
    assert "| 250 | finetune | +0.100 (one seed: no spread) |" in table  # not "± 0.000"
    assert "| 250 | frozen | +0.080 ± 0.040 |" in table  # hypot(0.028, 0.028)
    assert "± 0.000" not in table
    printed = format_summary(summary)
    assert "test_acc 0.700 (one seed: no spread)  (1 seed, 30 epochs)" in printed
    assert "test_acc 0.520 ± 0.028  (2 seeds, 30 epochs)" in printed
