"""BYOL pretraining for low-label image classification: the library behind the four stage scripts.

The public API, for pretraining your own backbone on your own images:
    BYOL(backbone, feature_dim)  the online/target networks and the loss; `update_target(tau)` after each step
    BYOLViews(image_size)        the paper's two augmented views of a uint8 batch, per-image parameters
    tau_at, lr_at                the EMA-rate and learning-rate schedules
    update_momentum, byol_loss   the EMA update and the normalised-MSE loss
"""

from __future__ import annotations

import importlib

# Imported on first use (PEP 562), so that `import byol.data` or `byol.report` does not import torch
# and torchvision: plot_results.py and data_split.py need neither, and they cost a new process 10-20 s
# on a small CPU.
_EXPORTS = {
    "BYOL": "byol.model",
    "BYOLViews": "byol.augment",
    "MLPHead": "byol.model",
    "ViewConfig": "byol.augment",
    "byol_loss": "byol.model",
    "cosine_schedule": "byol.schedules",
    "lr_at": "byol.schedules",
    "resnet18_backbone": "byol.model",
    "tau_at": "byol.schedules",
    "update_momentum": "byol.model",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'byol' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
