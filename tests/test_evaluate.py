"""The representation monitors: effective rank (RankMe) and the weighted k-NN."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import write_split

from byol.data import read_split
from byol.evaluate import diagnostic_voters, effective_rank, knn_accuracy


@pytest.mark.parametrize("used_directions", [1, 5, 40])
def test_effective_rank_counts_the_directions_the_features_use(used_directions):
    generator = torch.Generator().manual_seed(0)
    # Equal spread in a random `used_directions`-dimensional subspace of 64 dimensions, plus an offset
    # (the mean must not count as a direction) and a little noise in every dimension.
    basis = torch.linalg.qr(torch.randn(64, used_directions, generator=generator)).Q
    signs = torch.randint(0, 2, (4000, used_directions), generator=generator) * 2.0 - 1
    features = signs @ basis.T + 3.0 + 1e-6 * torch.randn(4000, 64, generator=generator)
    assert effective_rank(features) == pytest.approx(used_directions, rel=0.03)


def test_effective_rank_of_isotropic_features_is_close_to_their_dimension():
    features = torch.randn(20000, 64, generator=torch.Generator().manual_seed(1))
    assert 60 < effective_rank(features) <= 64


def test_knn_follows_the_nearest_labelled_images():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    test = torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.2, 1.0]])
    accuracy = knn_accuracy(train, torch.tensor([0, 0, 1, 1]), test, torch.tensor([0, 1, 1]), k=2)
    assert accuracy == 1.0


def test_weighted_knn_lets_close_neighbours_outvote_a_majority():
    # The test image sits on one class-1 voter and between two class-0 voters: a majority of 3 says 0,
    # the temperature-weighted vote (exp(sim / 0.07)) says 1.
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6]])
    test = torch.tensor([[1.0, 0.0]])
    assert knn_accuracy(train, torch.tensor([1, 0, 0]), test, torch.tensor([1]), k=3) == 1.0


def test_diagnostic_voters_are_balanced_non_test_images_whatever_the_labelled_split(image_folder, tmp_path):
    folder = image_folder(per_class=30, size=32)
    splits = {n: read_split(write_split(folder, tmp_path / f"labelled{n}", n, 12)) for n in (4, 20)}
    voters = {n: diagnostic_voters(split, 40) for n, split in splits.items()}
    paths = {n: splits[n].table.loc[rows, "path"].tolist() for n, rows in voters.items()}
    assert paths[4] == paths[20]  # --n-labelled moves images between labelled and unlabelled only
    for n, split in splits.items():
        chosen = split.table.loc[voters[n]]
        assert not set(voters[n]) & set(split.indices("test"))
        assert chosen["label"].value_counts().tolist() == [20, 20]
        # More voters asked for than a class has: every class gives what the smallest one can.
        assert len(diagnostic_voters(split, 1000)) == 2 * 24
    assert diagnostic_voters(splits[4], 0) == []


def test_effective_rank_of_diverged_features_is_nan_not_an_error():
    features = torch.randn(50, 8)
    features[3, 2] = float("nan")
    assert math.isnan(effective_rank(features))
    features[3, 2] = float("inf")
    assert math.isnan(effective_rank(features))
