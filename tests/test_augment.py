"""The batched BYOL views (byol/augment.py): per-image parameters, paper probabilities, torchvision parity."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from byol import augment
from byol.augment import VIEW_1, VIEW_2, BYOLViews, sample_view_params

N = 20_000  # large enough that a frequency is within +-0.015 of its probability (> 5 sigma)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "field, view_1_p, view_2_p",
    [
        ("flip", 0.5, 0.5),
        ("jitter", 0.8, 0.8),
        ("grayscale", 0.2, 0.2),
        ("blur", 1.0, 0.1),
        ("solarize", 0.0, 0.2),
    ],
)
def test_frequencies_match_the_papers_per_view_probabilities(field, view_1_p, view_2_p):
    for config, p in ((VIEW_1, view_1_p), (VIEW_2, view_2_p)):
        frequency = getattr(sample_view_params(N, 80, config, generator()), field).float().mean().item()
        assert abs(frequency - p) < 0.015, (field, frequency, p)


def test_parameters_are_drawn_independently_for_every_image():
    params = sample_view_params(N, 80, VIEW_2, generator())
    assert len(torch.unique(params.boxes, dim=0)) > 0.5 * N
    assert len(torch.unique(params.jitter_factors[:, 0])) > 0.99 * N  # float32 ties aside, all distinct
    assert len(torch.unique(params.jitter_order, dim=0)) == 24  # every order of the four adjustments
    # Independent draws: solarize and grayscale co-occur at the product of their rates.
    both = (params.solarize & params.grayscale).float().mean().item()
    assert abs(both - 0.2 * 0.2) < 0.01
    assert params.blur_sigma.min() >= 0.1 and params.blur_sigma.max() <= 2.0


def test_crop_boxes_follow_the_scale_and_ratio_ranges():
    boxes = sample_view_params(N, 100, VIEW_1, generator()).boxes
    x, y, w, h = boxes.unbind(1)
    area = w * h / 100**2
    assert (x >= 0).all() and (y >= 0).all() and (x + w <= 100).all() and (y + h <= 100).all()
    assert area.min() >= 0.07 and area.max() <= 1.0
    ratio = w / h
    assert ratio.min() >= 0.7 and ratio.max() <= 1.4
    assert 0.45 < area.mean() < 0.6  # uniform scale in [0.08, 1] has mean 0.54, before rejections


def test_identical_images_get_different_views_in_one_batch():
    image = torch.randint(0, 256, (1, 3, 40, 40), dtype=torch.uint8)
    view_1, view_2 = BYOLViews(32)(image.expand(16, -1, -1, -1), generator())
    assert view_1.shape == (16, 3, 32, 32)
    flat = view_1.flatten(1)
    assert torch.cdist(flat, flat).triu(1)[torch.ones(16, 16).triu(1).bool()].min() > 1e-3
    assert not torch.allclose(view_1, view_2)


def test_same_generator_state_gives_the_same_views():
    images = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8)
    first = BYOLViews(32)(images, generator(7))
    second = BYOLViews(32)(images, generator(7))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_adjustments_match_torchvision():
    images = torch.rand(4, 3, 20, 20, generator=generator())
    factor = torch.tensor([0.6, 0.9, 1.2, 1.4])
    shift = torch.tensor([-0.1, -0.02, 0.04, 0.1])
    for ours, theirs, values in (
        (augment.adjust_brightness, TF.adjust_brightness, factor),
        (augment.adjust_contrast, TF.adjust_contrast, factor),
        (augment.adjust_saturation, TF.adjust_saturation, factor),
        (augment.adjust_hue, TF.adjust_hue, shift),
    ):
        expected = torch.stack([theirs(images[i], values[i].item()) for i in range(4)])
        torch.testing.assert_close(ours(images, values), expected, atol=2e-4, rtol=0)
    sigma = torch.tensor([0.3, 0.8, 1.4, 2.0])
    expected = torch.stack([TF.gaussian_blur(images[i], [3, 3], [sigma[i].item()] * 2) for i in range(4)])
    torch.testing.assert_close(augment.gaussian_blur(images, sigma), expected, atol=1e-5, rtol=0)


def test_crop_and_flip_cut_the_right_pixels():
    images = torch.rand(2, 3, 20, 20, generator=generator())
    boxes = torch.tensor([[3.0, 5.0, 8.0, 8.0], [0.0, 0.0, 20.0, 20.0]])
    out = augment.resized_crop(images, boxes, torch.tensor([False, True]), 8)
    torch.testing.assert_close(out[0], images[0, :, 5:13, 3:11], atol=1e-5, rtol=0)
    torch.testing.assert_close(
        augment.resized_crop(images, boxes, torch.tensor([False, True]), 20)[1],
        images[1].flip(-1),
        atol=1e-5,
        rtol=0,
    )


def test_solarize_only_where_drawn():
    images = torch.full((64, 3, 16, 16), 0.8)
    params = sample_view_params(64, 16, VIEW_2, generator())
    params.jitter[:] = False
    params.grayscale[:] = False
    params.blur[:] = False
    out = augment.apply_view(images, params, 16)
    solarized = (out < 0.5).flatten(1).all(1)
    assert torch.equal(solarized, params.solarize)


def test_blur_sigma_range_reaches_both_views():
    views = BYOLViews(32, blur_sigma=(0.05, 0.5))
    assert views.view_1.blur_sigma == views.view_2.blur_sigma == (0.05, 0.5)
    params = sample_view_params(4096, 40, views.view_2, generator(3))
    assert 0.05 <= params.blur_sigma.min() and params.blur_sigma.max() <= 0.5


def test_a_whole_view_matches_torchvision_image_by_image():
    """Colour jitter in each image's own order, then grayscale, then solarize, against torchvision's
    functional ops applied one image at a time in the same order (the crop and blur have their own
    tests; blur is left off here)."""
    images = torch.rand(48, 3, 24, 24, generator=generator(5))
    params = sample_view_params(48, 24, VIEW_2, generator(6))
    params.jitter[:] = torch.arange(48) % 6 != 0  # most jittered, some not
    params.grayscale[:] = torch.arange(48) % 3 == 0
    params.solarize[:] = torch.arange(48) % 4 == 1
    params.blur[:] = False
    assert len({tuple(order) for order in params.jitter_order.tolist()}) > 10  # many different orders
    cropped = augment.resized_crop(images, params.boxes, params.flip, 16).clamp(0, 1)
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    expected = []
    for i, image in enumerate(cropped):
        if params.jitter[i]:
            for which in params.jitter_order[i].tolist():
                image = adjust[which](image, params.jitter_factors[i, which].item())
        if params.grayscale[i]:
            image = TF.rgb_to_grayscale(image, num_output_channels=3)
        if params.solarize[i]:
            image = TF.solarize(image, 0.5)
        expected.append(image)
    torch.testing.assert_close(
        augment.apply_view(images, params, 16), torch.stack(expected), atol=3e-4, rtol=0
    )
