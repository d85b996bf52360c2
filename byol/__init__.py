"""BYOL pretraining for low-label image classification: the library behind the four stage scripts.

The public API, for pretraining your own backbone on your own images:
    BYOL(backbone, feature_dim)  the online/target networks and the loss; `update_target(tau)` after each step
    BYOLViews(image_size)        the paper's two augmented views of a uint8 batch, per-image parameters
    tau_at, lr_at                the EMA-rate and learning-rate schedules
    update_momentum, byol_loss   the EMA update and the normalised-MSE loss
"""

from byol.augment import BYOLViews, ViewConfig
from byol.model import BYOL, MLPHead, byol_loss, resnet18_backbone, update_momentum
from byol.schedules import cosine_schedule, lr_at, tau_at

__all__ = [
    "BYOL",
    "BYOLViews",
    "MLPHead",
    "ViewConfig",
    "byol_loss",
    "cosine_schedule",
    "lr_at",
    "resnet18_backbone",
    "tau_at",
    "update_momentum",
]
