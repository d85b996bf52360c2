"""The BYOL module, its loss, EMA and schedules (byol/model.py, byol/schedules.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from byol import BYOL, BYOLViews, byol_loss, lr_at, resnet18_backbone, tau_at, update_momentum
from byol.pretrain_config import PretrainConfig


def small_cnn() -> nn.Module:
    """A user's own backbone: any module mapping images to (B, D) features."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def test_loss_is_two_minus_two_cosine():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert byol_loss(a, a).item() == 0
    assert math.isclose(byol_loss(a, -a).item(), 4.0)
    assert math.isclose(byol_loss(a, torch.tensor([[0.0, 3.0], [5.0, 0.0]])).item(), 2.0)


def test_target_gets_no_gradient_and_follows_the_ema_formula():
    model = BYOL(small_cnn(), 32, hidden_dim=64, projection_dim=16)
    views = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    target_before = [p.clone() for p in model.target_backbone.parameters()]
    model(*views).backward()
    optimizer.step()
    assert all(p.grad is None and not p.requires_grad for p in model.target_backbone.parameters())
    assert all(p.grad is None for p in model.target_projector.parameters())
    assert all(torch.equal(a, b) for a, b in zip(target_before, model.target_backbone.parameters()))
    online = [p.clone() for p in model.backbone.parameters()]
    model.update_target(0.9)
    for old, new, theta in zip(target_before, model.target_backbone.parameters(), online):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * theta)


def test_each_views_prediction_is_scored_against_the_other_views_target():
    torch.manual_seed(0)
    model = BYOL(small_cnn(), 32, hidden_dim=64, projection_dim=16).eval()  # eval: no batch statistics
    with torch.no_grad():  # a target unlike the online network, so the pairing shows
        for param in [*model.target_backbone.parameters(), *model.target_projector.parameters()]:
            param.add_(torch.randn_like(param) * 0.5)
    view_1, view_2 = torch.randn(4, 3, 16, 16), 3 * torch.rand(4, 3, 16, 16) - 4  # unlike each other

    def prediction(view):
        return model.predictor(model.projector(model.backbone(view)))

    def target(view):
        return model.target_projector(model.target_backbone(view))

    with torch.no_grad():
        cross = byol_loss(prediction(view_1), target(view_2)) + byol_loss(prediction(view_2), target(view_1))
        same = byol_loss(prediction(view_1), target(view_1)) + byol_loss(prediction(view_2), target(view_2))
        loss = model(view_1, view_2)
    torch.testing.assert_close(loss, cross)
    assert abs(loss.item() - same.item()) > 1e-3  # the same-view pairing is a different number


def test_update_momentum_on_plain_modules():
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    expected = 0.99 * target.weight.detach() + 0.01 * online.weight.detach()
    update_momentum(online, target, 0.99)
    torch.testing.assert_close(target.weight.detach(), expected)


def test_tau_rises_from_base_to_one_on_a_cosine():
    assert tau_at(0, 100, 0.996) == 0.996
    assert math.isclose(tau_at(50, 100, 0.996), 0.998)
    assert tau_at(100, 100, 0.996) == 1.0
    values = [tau_at(k, 100, 0.99) for k in range(101)]
    assert values == sorted(values)


def test_learning_rate_warms_up_then_decays_to_zero():
    assert math.isclose(lr_at(0, 100, 10, 1.0), 0.1)
    assert lr_at(9, 100, 10, 1.0) == 1.0
    assert math.isclose(lr_at(55, 100, 10, 1.0), 0.5)
    assert lr_at(100, 100, 10, 1.0) < 1e-12


def test_backbone_state_loads_strictly_into_stock_resnet18():
    model = BYOL(resnet18_backbone(), 512)
    stock = resnet18()
    stock.fc = nn.Identity()
    stock.load_state_dict(model.backbone.state_dict(), strict=True)


def test_a_users_own_backbone_learns_with_the_public_api():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 24, 24), dtype=torch.uint8)
    model = BYOL(small_cnn(), feature_dim=32, hidden_dim=128, projection_dim=32)
    views = BYOLViews(image_size=20)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for step in range(40):
        batch = images[torch.randint(0, 64, (32,), generator=generator)]
        loss = model(*views(batch, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.update_target(tau_at(step, 40, 0.99))
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


@pytest.mark.parametrize("trust, clip", [(1e-3, False), (0.02, False), (0.02, True), (50.0, True)])
def test_lars_matches_the_papers_update_rule(trust, clip):
    from byol.optim import make_optimizer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    config = PretrainConfig(optimizer="lars", lr=0.1, weight_decay=0.01, lars_trust=trust, lars_clip=clip)
    optimizer = make_optimizer(config, model)
    capped = []
    expected = {name: param.detach().clone() for name, param in model.named_parameters()}
    momentum = {name: torch.zeros_like(param) for name, param in expected.items()}
    for _ in range(3):
        grads = {name: torch.randn_like(param) for name, param in model.named_parameters()}
        for name, param in model.named_parameters():
            param.grad = grads[name].clone()
            if param.ndim > 1:  # weights: decay and the trust ratio eta * |w| / |g + wd w|
                update = grads[name] + 0.01 * expected[name]
                ratio = trust * expected[name].norm() / update.norm()
                if clip:  # LARC: the tensor's rate lr x ratio is capped at lr
                    capped.append(bool(ratio / 0.1 > 1))
                    ratio = min(ratio / 0.1, 1.0)
                update = update * ratio
            else:  # biases and BatchNorm: plain momentum SGD, no decay
                update = grads[name]
            momentum[name] = 0.9 * momentum[name] + update
            expected[name] = expected[name] - 0.1 * momentum[name]
        optimizer.step()
        for name, param in model.named_parameters():
            torch.testing.assert_close(param.detach(), expected[name], msg=name)
    if clip:  # eta 0.02 never reaches the cap here, eta 50 always does: both branches are checked
        assert all(capped) if trust > 1 else not any(capped)


def test_the_predictor_gets_its_own_rate_and_every_parameter_one_group():
    from byol.optim import make_optimizer, set_learning_rates

    model = BYOL(nn.Sequential(nn.Flatten(), nn.Linear(12, 8)), 8, projection_dim=4, hidden_dim=16)
    for name in ("lars", "sgd", "adamw"):
        config = PretrainConfig(optimizer=name, lr=0.5, weight_decay=1e-4, predictor_lr_scale=10.0)
        optimizer = make_optimizer(config, model)
        set_learning_rates(optimizer, 0.25)
        rate = {id(param): group["lr"] for group in optimizer.param_groups for param in group["params"]}
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        assert len(rate) == sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)
        for param_name, param in trainable:
            assert rate[id(param)] == (2.5 if param_name.startswith("predictor.") else 0.25), param_name
    plain = make_optimizer(PretrainConfig(optimizer="lars", lr=0.5, weight_decay=1e-4), model)
    assert len(plain.param_groups) == 2  # without a scale, the paper's two groups
