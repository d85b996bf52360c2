"""How good are the features: backbone features of cached images, a weighted k-NN, and the monitor
train_byol.py runs each epoch with them (byol_metrics.csv's val_knn_*, feature_std/rank).

The monitor scores the validation split, never the test split: its numbers choose recipes and
checkpoints. The k-NN classifier (Wu et al. 2018, as used by solo-learn and lightly) labels each image by the
cosine-similarity-weighted vote of its k nearest labelled images; it needs no training, so it can
track representation quality during pretraining. The effective rank (RankMe) tracks how many
directions the features use: dimensional collapse, which the k-NN accuracy alone can hide.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from byol.augment import normalize_imagenet
from byol.data import Split, labelled_rows, split_rank
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
    features = [output.float() for output in forward_batches(backbone, images, indices, image_size, runtime)]
    backbone.train(was_training)
    return torch.cat(features)


def forward_batches(
    backbone: nn.Module, images: torch.Tensor, indices: Sequence[int], image_size: int, runtime: Runtime
):
    """`backbone`'s outputs on the eval views of cache rows `indices`, FEATURE_BATCH at a time, in
    whatever mode the backbone is in, on runtime's device, precision and memory format."""
    indices = list(indices)
    for start in range(0, len(indices), FEATURE_BATCH):
        batch = images[indices[start : start + FEATURE_BATCH]].to(runtime.device, non_blocking=True)
        batch = eval_view(batch, image_size).contiguous(memory_format=runtime.memory_format)
        with autocast(runtime.device, runtime.precision):
            yield backbone(batch)


@torch.no_grad()
def recalibrate_batchnorm(
    backbone: nn.Module, images: torch.Tensor, indices: Sequence[int], image_size: int, runtime: Runtime
) -> nn.Module:
    """`backbone` with every BatchNorm's running mean and variance recomputed, as exact averages over
    the cache rows `indices` (eval views, in batches of FEATURE_BATCH); the weights are unchanged.

    A random backbone's BatchNorm layers hold their initial statistics (mean 0, variance 1: an
    identity), so frozen random features pass through unnormalised activations; recomputed on the
    data, they are what a random network with the data's statistics gives (the fair frozen baseline)."""
    norms = [module for module in backbone.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
    backbone.train()
    for _ in forward_batches(backbone, images, indices, image_size, runtime):
        pass  # each batch updates the running statistics
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return backbone.eval()


def diagnostic_voters(split: Split, n_voters: int) -> list[int]:
    """A fixed, balanced sample of `n_voters` pretraining cache rows, the same number per class.

    The voters of the diagnostic k-NN: thousands of labelled images that the low-label setting does
    not have, used only to rank pretraining recipes (a k-NN with the 250 labelled voters moves by
    about +-0.02 between equal runs, the size of the effects to see). Drawn from every pretraining
    image, labelled and unlabelled alike, so the sample never holds a validation or test image. A
    class with fewer images than its share lowers every class's share, so that the voters stay balanced.
    """
    table = split.table.loc[labelled_rows(split, "labelled", "unlabelled")]
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
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Accuracy of a weighted k-NN (cosine similarity, weights exp(sim / T)) on the query features."""
    train_features = F.normalize(train_features, dim=1)
    query_features = F.normalize(query_features, dim=1)
    n_classes = int(max(train_labels.max(), query_labels.max())) + 1
    k = min(k, len(train_features))
    correct = 0
    for start in range(0, len(query_features), 1024):
        similarity = query_features[start : start + 1024] @ train_features.T  # (b, N_train)
        top_similarity, top_index = similarity.topk(k, dim=1)
        weights = (top_similarity / temperature).exp()
        votes = torch.zeros(len(weights), n_classes, device=weights.device)
        votes.scatter_add_(1, train_labels[top_index], weights)
        correct += (votes.argmax(1) == query_labels[start : start + 1024]).sum().item()
    return correct / len(query_features)


def effective_rank(features: torch.Tensor) -> float:
    """RankMe (Garrido et al. 2023, arXiv 2210.02885): exp(entropy of the normalised singular values).

    About D for features spread evenly over D directions, k when they lie in k of them, 1 when one
    direction carries everything. Computed on centred features: the mean of post-ReLU features is one
    large direction shared by every image, which tells the images apart no better than a constant.
    NaN for features that are not all finite (a diverged run), rather than an error mid-training.
    """
    features = features.double()
    if not torch.isfinite(features).all():  # a diverged network: no rank to speak of (svdvals would raise)
        return math.nan
    singular_values = torch.linalg.svdvals(features - features.mean(0))
    p = singular_values / singular_values.sum().clamp_min(1e-12) + 1e-12
    return torch.exp(-(p * p.log()).sum()).item()


# The monitor's columns of byol_metrics.csv, for an epoch it skips (--knn-every) or cannot score:
# each k-NN names the images it classifies (val_) and its voters (the labelled split, or k neighbours
# among the diagnostic voters).
NOT_MONITORED = {
    "val_knn_labelled": math.nan,
    "val_knn_k20": math.nan,
    "val_knn_k200": math.nan,
    "feature_std": math.nan,
    "feature_rank": math.nan,
    "monitor_seconds": math.nan,
}
DIAG_KS = (20, 200)  # the diagnostic k-NN's neighbours: the usual k, and a smoother vote over many voters


@dataclass(frozen=True)
class MonitorRows:
    """The cache rows the monitor scores: the labelled voters, the validation images it classifies and
    the diagnostic voters."""

    labelled: list[int]
    validation: list[int]
    voters: list[int]  # diagnostic_voters: pretraining images, labels the low-label setting lacks
    labels: torch.Tensor  # (N,) every cache row's folder label


def monitor_rows(split: Split, diag_voters: int) -> MonitorRows:
    labels = torch.tensor(split.table["label"].to_numpy())
    voters = diagnostic_voters(split, diag_voters)
    return MonitorRows(split.indices("labelled"), split.indices("validation"), voters, labels)


def knn_monitor(
    backbone: nn.Module, images: torch.Tensor, rows: MonitorRows, image_size: int, runtime: Runtime
) -> dict[str, float]:
    """k-NN accuracy (labelled -> validation, and diagnostic voters -> validation), the per-dimension
    std of the normalised features, their effective rank, and the seconds all of it took.

    Two collapse alarms. The std is near 0 when all images map to one point, about 1/sqrt(D) when
    the features are spread. The effective rank falls when the features keep their spread but
    squeeze into a few directions (dimensional collapse), which a linear probe then cannot undo.
    Every image's features come from one pass, the voters' with the validation images'. A split without
    validation images (data_split.py --n-validation 0) is not monitored.
    """
    if not rows.labelled or not rows.validation:
        return NOT_MONITORED
    started = time.perf_counter()
    unique = list(dict.fromkeys(rows.labelled + rows.validation + rows.voters))
    position = {row: i for i, row in enumerate(unique)}
    features = extract_features(backbone, images, unique, image_size, runtime).cpu()

    def of(subset: list[int]) -> torch.Tensor:
        return features[[position[row] for row in subset]]

    query_features, query_labels = of(rows.validation), rows.labels[rows.validation]
    result = dict(NOT_MONITORED)
    result["val_knn_labelled"] = knn_accuracy(
        of(rows.labelled), rows.labels[rows.labelled], query_features, query_labels
    )
    if rows.voters:
        voter_features, voter_labels = of(rows.voters), rows.labels[rows.voters]
        for k in DIAG_KS:
            result[f"val_knn_k{k}"] = knn_accuracy(
                voter_features, voter_labels, query_features, query_labels, k=k
            )
    # The collapse alarms on the labelled and validation images.
    scored = features[: len(rows.labelled) + len(rows.validation)]
    result["feature_std"] = F.normalize(scored, dim=1).std(dim=0).mean().item()
    result["feature_rank"] = effective_rank(scored)
    result["monitor_seconds"] = time.perf_counter() - started
    return result


def describe_monitor(monitored: dict[str, float]) -> str:
    return (
        f"val_knn_labelled {monitored['val_knn_labelled']:.4f} val_knn_k20 {monitored['val_knn_k20']:.4f} "
        f"val_knn_k200 {monitored['val_knn_k200']:.4f} feature_rank {monitored['feature_rank']:.1f}"
    )


def standardizer(train_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and 1/std of the training features; 0 for dimensions constant over them."""
    mean, std = train_features.mean(0), train_features.std(0, unbiased=False)
    alive = std > 1e-6 * std.max().clamp_min(1e-12)
    scale = torch.where(alive, std, torch.inf).reciprocal()  # 1 / inf = 0 for the dead dimensions
    return mean, scale


def standardize(
    train_features: torch.Tensor, test_features: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both feature sets shifted and scaled per dimension by the training features' mean and std.

    The linear probe's usual first step (a StandardScaler; MAE's BatchNorm without affine): the raw
    features of a random and a BYOL backbone differ in scale by orders of magnitude, which no single
    head learning rate suits; unscaled, the head sat on one class for epochs or jumped around.
    Dimensions constant over the training images (dead ReLUs) carry nothing to learn from: set to zero.
    """
    mean, scale = standardizer(train_features)
    return (train_features - mean) * scale, (test_features - mean) * scale
