"""The representation monitors: effective rank (RankMe) and the weighted k-NN."""

from __future__ import annotations

import pytest
import torch

from byol.evaluate import effective_rank, knn_accuracy


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
