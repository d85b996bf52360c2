"""BYOL − random paired over seeds (byol/stats.py), and what the report calls it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from byol.outputs import prediction_column
from byol.stats import paired_bootstrap, paired_differences, rate_limits, summarize, t_critical, verdict


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


def predictions_for(
    correct: dict[str, list[list[int]]], mode: str = "frozen", n_labels: int = 250
) -> pd.DataFrame:
    """classifier_predictions.csv for two classes, every test image of label 1: predicted 1 where correct."""
    n_images = len(correct["byol"][0])
    table = {"row": list(range(n_images)), "label": [1] * n_images}
    for init, seeds in correct.items():
        for seed, flags in enumerate(seeds):
            table[prediction_column(init, mode, n_labels, seed)] = flags
    return pd.DataFrame(table)


def test_the_bootstrap_adds_the_test_sets_sampling_error_and_the_verdict_takes_the_wider():
    # Five seeds whose differences agree closely (a t-interval far from 0), on only 40 test images
    # where BYOL is right on 4 images more than random: the test sample's error dominates.
    generator = np.random.default_rng(0)
    random_flags, byol_flags = [], []
    for _ in range(5):
        base = (generator.random(40) < 0.5).astype(int)
        better = base.copy()
        better[np.flatnonzero(base == 0)[:4]] = 1
        random_flags.append(base.tolist())
        byol_flags.append(better.tolist())
    runs = pd.DataFrame(
        final_runs([float(np.mean(f)) for f in random_flags], [float(np.mean(f)) for f in byol_flags])
    )
    predictions = predictions_for({"random": random_flags, "byol": byol_flags})
    row = paired_differences(runs, predictions).iloc[0]
    assert row["diff_mean"] == pytest.approx(0.1)
    assert row["ci_high"] - row["ci_low"] < 1e-9  # every seed +0.10: a t-interval of width 0
    assert row["boot_low"] < 0.1 < row["boot_high"] and row["boot_high"] - row["boot_low"] > 0.05
    assert (row["low"], row["high"]) == (row["boot_low"], row["boot_high"])
    assert row["verdict"] == "gain"  # the wider interval still excludes 0 here
    # Without the per-image predictions the bootstrap is missing and the t-interval decides.
    alone = paired_differences(runs).iloc[0]
    assert math.isnan(alone["boot_low"]) and (alone["low"], alone["high"]) == (
        alone["ci_low"],
        alone["ci_high"],
    )


def test_a_gain_on_few_test_images_is_noise_once_they_are_resampled():
    # Every seed: BYOL right on one test image more out of 20 (+0.05, the same on every seed).
    random_flags = [[1] * 10 + [0] * 10 for _ in range(3)]
    byol_flags = [[1] * 11 + [0] * 9 for _ in range(3)]
    runs = pd.DataFrame(final_runs([0.5] * 3, [0.55] * 3))
    row = paired_differences(runs, predictions_for({"random": random_flags, "byol": byol_flags})).iloc[0]
    assert row["boot_low"] <= 0 < row["boot_high"]
    assert row["verdict"] == "noise (interval includes 0)"


def test_the_bootstrap_resamples_seeds_too():
    # Identical test-image patterns, seeds that disagree: seed-to-seed spread must widen the interval.
    random_flags = [[1] * 500 + [0] * 500] * 4
    byol_flags = [[1] * (500 + gain) + [0] * (500 - gain) for gain in (0, 100, 0, 100)]
    low, high = paired_bootstrap(np.array(byol_flags) == 1, np.array(random_flags) == 1, draws=2000, seed=1)
    assert low < 0.02 and high > 0.08  # mean 0.05; images alone would give about ±0.02


def test_the_summary_says_whether_training_loss_levelled_off_and_which_rates_were_chosen():
    rows = []
    for seed, rate in enumerate([1e-3, 1e-3, 1e-2]):
        for epoch in range(1, 11):  # still falling (random) against flat over the last fifth (byol)
            for init, loss in (("random", 1.0 - 0.05 * epoch), ("byol", max(0.2, 1.0 - 0.2 * epoch))):
                rows.append(
                    {
                        "init": init,
                        "mode": "frozen",
                        "n_labels": 50,
                        "seed": seed,
                        "epoch": epoch,
                        "test_acc": 0.6,
                        "test_loss": 0.7,
                        "train_loss": loss,
                        "backbone_lr": math.nan,
                        "head_lr": rate,
                    }
                )
    summary = summarize(
        pd.DataFrame(rows), rate_limits({"probe_lrs": [1e-4, 1e-3, 1e-2], "widen_rates": 1})
    ).set_index("init")
    assert summary.loc["random", "train_loss_change"] == pytest.approx(-0.10)  # epochs 8 -> 10
    assert summary.loc["byol", "train_loss_change"] == pytest.approx(0.0)
    assert summary.loc["random", "chosen_lrs"] == "1e-03 (2), 1e-02 (1)"
    assert summary.loc["random", "seeds_on_edge"] == 0  # 1e-2 is the given edge, but 1e-1 could be tried
