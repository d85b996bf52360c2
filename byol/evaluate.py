"""How good are the features: backbone features of cached images, and a weighted k-NN monitor.

The k-NN classifier (Wu et al. 2018, as used by solo-learn and lightly) labels each test image by the
cosine-similarity-weighted vote of its k nearest labelled images; it needs no training, so it can
track representation quality during pretraining. The effective rank (RankMe) tracks how many
directions the features use: dimensional collapse, which the k-NN accuracy alone can hide.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from byol.augment import normalize_imagenet
from byol.data import Split, split_rank
from byol.device import autocast
from byol.distributed import Runtime

# The diagnostic k-NN's voters are drawn by a hash of this seed and each path: one fixed sample for
# every run on a split, whatever its --seed or --max-images, so that trials are scored alike.
VOTER_SEED = 20
FEATURE_BATCH = 256  # images per forward pass


def eval_view(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """The deterministic view used to evaluate: the whole cached image resized to `image_size`."""
    images = images.float() / 255
    if images.shape[-1] != image_size:
        images = F.interpolate(
            images, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    return normalize_imagenet(images)


@torch.no_grad()
def extract_features(
    backbone: nn.Module, images: torch.Tensor, indices: Sequence[int], image_size: int, runtime: Runtime
) -> torch.Tensor:
    """Backbone features (N, D) in fp32 of cache rows `indices`, with the backbone in eval mode, on
    runtime's device, precision and memory format."""
    was_training = backbone.training
    backbone.eval()
    features = []
    indices = list(indices)
    for start in range(0, len(indices), FEATURE_BATCH):
        batch = images[indices[start : start + FEATURE_BATCH]].to(runtime.device, non_blocking=True)
        batch = eval_view(batch, image_size).contiguous(memory_format=runtime.memory_format)
        with autocast(runtime.device, runtime.precision):
            features.append(backbone(batch).float())
    backbone.train(was_training)
    return torch.cat(features)


def diagnostic_voters(split: Split, n_voters: int) -> list[int]:
    """A fixed, balanced sample of `n_voters` non-test cache rows, the same number per class.

    The voters of the diagnostic k-NN: thousands of labelled images that the low-label setting does
    not have, used only to rank pretraining recipes (a k-NN with the 250 labelled voters moves by
    about +-0.02 between equal runs, the size of the effects to see). Drawn from every non-test image,
    labelled and unlabelled alike, so the sample never holds a test image and never changes when
    --n-labelled does (data_split draws the test set first). A class with fewer images than its share
    lowers every class's share, so that the voters stay balanced.
    """
    table = split.table.loc[split.indices("labelled", "unlabelled")]
    if n_voters <= 0 or table.empty:
        return []
    per_class_available = table["label"].value_counts().reindex(range(len(split.classes)), fill_value=0)
    per_class = min(n_voters // len(split.classes), int(per_class_available.min()))
    chosen = []
    for label in range(len(split.classes)):
        rows = table[table["label"] == label]
        ranked = sorted(zip(rows["path"], rows.index), key=lambda item: split_rank(VOTER_SEED, item[0]))
        chosen.extend(row for _, row in ranked[:per_class])
    return sorted(chosen)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Accuracy of a weighted k-NN (cosine similarity, weights exp(sim / T)) on the test features."""
    train_features = F.normalize(train_features, dim=1)
    test_features = F.normalize(test_features, dim=1)
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, len(train_features))
    correct = 0
    for start in range(0, len(test_features), 1024):
        similarity = test_features[start : start + 1024] @ train_features.T  # (b, N_train)
        top_similarity, top_index = similarity.topk(k, dim=1)
        weights = (top_similarity / temperature).exp()
        votes = torch.zeros(len(weights), n_classes, device=weights.device)
        votes.scatter_add_(1, train_labels[top_index], weights)
        correct += (votes.argmax(1) == test_labels[start : start + 1024]).sum().item()
    return correct / len(test_features)


def effective_rank(features: torch.Tensor) -> float:
    """RankMe (Garrido et al. 2023, arXiv 2210.02885): exp(entropy of the normalised singular values).

    About D for features spread evenly over D directions, k when they lie in k of them, 1 when one
    direction carries everything. Computed on centred features: the mean of post-ReLU features is one
    large direction shared by every image, which tells the images apart no better than a constant.
    """
    features = features.double()
    singular_values = torch.linalg.svdvals(features - features.mean(0))
    p = singular_values / singular_values.sum().clamp_min(1e-12) + 1e-12
    return torch.exp(-(p * p.log()).sum()).item()
