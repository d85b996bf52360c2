"""BYOL − random paired over seeds (byol/stats.py), and what the report calls it."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from byol.stats import paired_differences, t_critical, verdict


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_t_critical_values_match_the_table(df, expected):
    assert t_critical(df) == pytest.approx(expected, abs=1e-4)


def final_runs(
    random: list[float], byol: list[float], mode: str = "frozen", n_labels: int = 250
) -> list[dict]:
    return [
        {"init": init, "mode": mode, "n_labels": n_labels, "seed": seed, "test_acc": acc}
        for init, accs in (("random", random), ("byol", byol))
        for seed, acc in enumerate(accs)
    ]


def test_paired_interval_matches_a_hand_computation():
    # Per-seed differences 0.02, 0.04, 0.03, 0.05, 0.01 on seed-to-seed spreads far larger than them.
    random = [0.50, 0.60, 0.55, 0.65, 0.45]
    byol = [0.52, 0.64, 0.58, 0.70, 0.46]
    row = paired_differences(pd.DataFrame(final_runs(random, byol))).iloc[0]
    # mean 0.03; sample std sqrt(0.001 / 4) = 0.015811; t(4) = 2.776445; half-width 0.019632
    assert row["diff_mean"] == pytest.approx(0.03)
    assert row["ci_low"] == pytest.approx(0.03 - 0.019632, abs=1e-6)
    assert row["ci_high"] == pytest.approx(0.03 + 0.019632, abs=1e-6)
    assert row["seeds"] == 5 and row["verdict"] == "gain"
    # Unpaired, the same numbers are noise: the seeds' spread (std ~0.08) swamps 0.03.
    assert math.hypot(pd.Series(random).std(), pd.Series(byol).std()) > 0.1


def test_an_interval_that_includes_zero_is_noise_not_a_gain():
    table = pd.DataFrame(
        final_runs([0.50, 0.60, 0.55], [0.58, 0.57, 0.58], "finetune")  # +0.08, -0.03, +0.03
        + final_runs([0.60, 0.62, 0.61], [0.55, 0.56, 0.56], "frozen")  # -0.05, -0.06, -0.05
    )
    rows = paired_differences(table).set_index("mode")
    assert rows.loc["finetune", "diff_mean"] > 0 and rows.loc["finetune", "ci_low"] < 0
    assert rows.loc["finetune", "verdict"] == "noise (interval includes 0)"
    assert rows.loc["frozen", "verdict"] == "loss"
    assert verdict(math.nan, math.nan) == "one seed: no interval"


def test_only_seeds_that_both_inits_ran_are_paired():
    runs = final_runs([0.5, 0.6, 0.7], [0.6, 0.7])  # seed 2 has no BYOL run
    row = paired_differences(pd.DataFrame(runs)).iloc[0]
    assert row["seeds"] == 2 and row["diff_mean"] == pytest.approx(0.1)
    assert paired_differences(pd.DataFrame(final_runs([0.5], [])[:1])).empty
