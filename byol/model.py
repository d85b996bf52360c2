"""The networks: a ResNet18 backbone without its classifier, the MLP heads, and the BYOL module.

BYOL (arXiv 2006.07733, section 3): an online network (backbone, projector, predictor) learns to
predict a target network's projection of another view of the same image; the target is an
exponential moving average of the online backbone and projector and never receives gradients.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

RESNET18_FEATURES = 512
# BatchNorm in training mode needs two values per channel; the heads' (and, at 32 px, the backbone's
# last) BatchNorm sees one per image, so a step on one image per process fails.
MIN_BATCH_SIZE = 2
MIN_BATCH_SIZE_REASON = "must be 2 or more (BatchNorm needs two images per step and process)"


def resnet18_backbone() -> nn.Module:
    """torchvision resnet18 from random weights with `fc` replaced by Identity: images -> (B, 512)."""
    model = resnet18(weights=None)
    model.fc = nn.Identity()
    return model


class MLPHead(nn.Sequential):
    """The paper's projector and predictor: Linear -> BatchNorm -> ReLU -> Linear."""

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Normalised MSE, 2 - 2 cos(p, z), averaged over the batch; computed in fp32 under autocast."""
    prediction = F.normalize(prediction.float(), dim=-1)
    target = F.normalize(target.float(), dim=-1)
    return (2 - 2 * (prediction * target).sum(dim=-1)).mean()


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, for every parameter (the paper's eq. 1)."""
    online_params = list(online.parameters())
    target_params = list(target.parameters())
    torch._foreach_mul_(target_params, tau)
    torch._foreach_add_(target_params, online_params, alpha=1 - tau)


class BYOL(nn.Module):
    """BYOL around any backbone that maps images to (B, feature_dim) vectors.

    `model(view_1, view_2)` returns the symmetrised loss L(v1, v2) + L(v2, v1) (range 0..8); call
    `model.update_target(tau)` after each optimiser step. Both views go through one forward call so
    that DistributedDataParallel sees a single forward per step.
    """

    def __init__(
        self, backbone: nn.Module, feature_dim: int, projection_dim: int = 256, hidden_dim: int = 4096
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = MLPHead(feature_dim, hidden_dim, projection_dim)
        self.predictor = MLPHead(projection_dim, hidden_dim, projection_dim)
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> torch.Tensor:
        # Each view is its own batch, as in the paper's implementation, so BatchNorm statistics are
        # per view.
        prediction_1 = self.predictor(self.projector(self.backbone(view_1)))
        prediction_2 = self.predictor(self.projector(self.backbone(view_2)))
        with torch.no_grad():
            target_1 = self.target_projector(self.target_backbone(view_1))
            target_2 = self.target_projector(self.target_backbone(view_2))
        return byol_loss(prediction_1, target_2) + byol_loss(prediction_2, target_1)

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        update_momentum(self.backbone, self.target_backbone, tau)
        update_momentum(self.projector, self.target_projector, tau)
