"""The two BYOL views, made for a whole batch at once on the training device.

Every image gets its own random parameters (crop box, flip, jitter factors and order, grayscale,
blur sigma, solarize), drawn from one `torch.Generator` so a run can be replayed exactly. The
probabilities are the paper's (arXiv 2006.07733, table 6): the views differ only in blur and
solarize. There is no Python loop over images: each transform is a few tensor ops on the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Under 8 px the blur's reflect padding runs out of pixels and ResNet18, which halves the side five
# times, has nothing left to see.
MIN_IMAGE_SIZE = 8


@dataclass(frozen=True)
class ViewConfig:
    """One view's augmentation; the defaults are the paper's view 1 (blur always, never solarize)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0


VIEW_1 = ViewConfig()
VIEW_2 = ViewConfig(blur_p=0.1, solarize_p=0.2)


def uniform(low: float, high: float, size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.empty(size, device=generator.device).uniform_(low, high, generator=generator)


def bernoulli(p: float, size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(size, device=generator.device, generator=generator) < p


def crop_boxes(
    n: int,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    attempts: int = 10,
) -> torch.Tensor:
    """torchvision's RandomResizedCrop sampling, for n square images at once: (n, 4) x, y, w, h in pixels.

    Each image tries `attempts` boxes and keeps the first that fits; when none fits it falls back to
    the whole image, as torchvision does for a square image.
    """
    area = uniform(*scale, n * attempts, generator).view(n, attempts) * size * size
    log_ratio = uniform(math.log(ratio[0]), math.log(ratio[1]), n * attempts, generator).view(n, attempts)
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).round()
    height = torch.sqrt(area / aspect).round()
    fits = (width > 0) & (width <= size) & (height > 0) & (height <= size)
    first = torch.where(
        fits.any(1), fits.float().argmax(1), torch.full_like(fits[:, 0], -1, dtype=torch.long)
    )
    pick = first.clamp(min=0).unsqueeze(1)
    width = torch.where(first >= 0, width.gather(1, pick).squeeze(1), torch.full_like(width[:, 0], size))
    height = torch.where(first >= 0, height.gather(1, pick).squeeze(1), torch.full_like(height[:, 0], size))
    x = torch.floor(torch.rand(n, device=generator.device, generator=generator) * (size - width + 1))
    y = torch.floor(torch.rand(n, device=generator.device, generator=generator) * (size - height + 1))
    return torch.stack([x, y, width, height], dim=1)


def resized_crop(
    images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, out_size: int
) -> torch.Tensor:
    """Crop each image to its box, resize to out_size and mirror where `flip`, in one grid_sample.

    images: (B, 3, S, S) float; boxes: (B, 4) x, y, w, h in pixels; flip: (B,) bool.
    """
    size = images.shape[-1]
    x, y, width, height = boxes.unbind(1)
    theta = torch.zeros(len(images), 2, 3, device=images.device, dtype=images.dtype)
    # align_corners=False: normalised -1..1 spans pixel edges, so a box [x, x+w] has centre
    # 2(x + w/2)/S - 1 and half-extent w/S.
    theta[:, 0, 0] = torch.where(flip, -1.0, 1.0) * width / size
    theta[:, 0, 2] = 2 * (x + width / 2) / size - 1
    theta[:, 1, 1] = height / size
    theta[:, 1, 2] = 2 * (y + height / 2) / size - 1
    grid = F.affine_grid(theta, [len(images), 3, out_size, out_size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, as torchvision's rgb_to_grayscale: (B, 3, H, W) -> (B, 1, H, W)."""
    r, g, b = images.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(1)
    max_c, _ = images.max(1)
    min_c, _ = images.min(1)
    delta = max_c - min_c
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))
    saturation = delta / torch.where(max_c > 0, max_c, torch.ones_like(max_c))
    hue_r = ((g - b) / safe_delta) % 6
    hue_g = (b - r) / safe_delta + 2
    hue_b = (r - g) / safe_delta + 4
    hue = torch.where(max_c == r, hue_r, torch.where(max_c == g, hue_g, hue_b))
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    return torch.stack([hue, saturation, max_c], dim=1)


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = images.unbind(1)
    # The standard closed form: channel n takes v - v*s*clamp(min(k, 4-k), 0, 1), k = (n + 6h) mod 6.
    channels = []
    for n in (5, 3, 1):
        k = (n + hue * 6) % 6
        channels.append(value - value * saturation * torch.clamp(torch.minimum(k, 4 - k), 0, 1))
    return torch.stack(channels, dim=1)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (images * factor.view(-1, 1, 1, 1)).clamp(0, 1)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1 - factor) * mean).clamp(0, 1)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1 - factor) * grayscale(images)).clamp(0, 1)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    hsv = rgb_to_hsv(images)
    hue = (hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1)).clamp(0, 1)


ADJUSTMENTS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(
    images: torch.Tensor, applied: torch.Tensor, factors: torch.Tensor, order: torch.Tensor
) -> torch.Tensor:
    """torchvision's ColorJitter, each image with its own factors and its own order of the four.

    factors: (B, 4) brightness, contrast, saturation, hue; order: (B, 4) a permutation per image.
    At each position in the order, each adjustment runs only on the images that have it there, so
    the work equals four whole-batch adjustments whatever the orders are.
    """
    images = images.clone()
    for position in range(4):
        for which, adjust in enumerate(ADJUSTMENTS):
            chosen = torch.nonzero(applied & (order[:, position] == which)).squeeze(1)
            if len(chosen):
                images[chosen] = adjust(images[chosen], factors[chosen, which])
    return images


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own sigma (pixels): a separable kernel, one grouped conv per axis.

    The kernel spans about 10% of the image, as the paper's 23 px at 224 px.
    """
    n, channels, height, width = images.shape
    kernel_size = max(3, int(0.1 * height) // 2 * 2 + 1)
    half = kernel_size // 2
    offsets = torch.arange(-half, half + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma.view(-1, 1) ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, k)
    kernel = kernel.repeat_interleave(channels, dim=0)  # (B*3, k): one kernel per image channel
    flat = images.reshape(1, n * channels, height, width)
    flat = F.conv2d(
        F.pad(flat, (half, half, 0, 0), mode="reflect"),
        kernel.view(-1, 1, 1, kernel_size),
        groups=n * channels,
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, half, half), mode="reflect"),
        kernel.view(-1, 1, kernel_size, 1),
        groups=n * channels,
    )
    return flat.view(n, channels, height, width)


def where_images(mask: torch.Tensor, changed: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), changed, images)


@dataclass
class ViewParams:
    """One view's random parameters, one row per image (all tensors on the generator's device)."""

    boxes: torch.Tensor  # (B, 4) crop x, y, w, h in pixels of the source image
    flip: torch.Tensor  # (B,) bool
    jitter: torch.Tensor  # (B,) bool
    jitter_factors: torch.Tensor  # (B, 4) brightness, contrast, saturation, hue
    jitter_order: torch.Tensor  # (B, 4) permutation of the four adjustments
    grayscale: torch.Tensor  # (B,) bool
    blur: torch.Tensor  # (B,) bool
    blur_sigma: torch.Tensor  # (B,) pixels
    solarize: torch.Tensor  # (B,) bool

    def rows(self, start: int, stop: int) -> ViewParams:
        return ViewParams(**{name: getattr(self, name)[start:stop] for name in self.__dataclass_fields__})


def sample_view_params(
    n: int, source_size: int, config: ViewConfig, generator: torch.Generator
) -> ViewParams:
    """Draw independent parameters for each of n images."""
    boxes = crop_boxes(n, source_size, config.crop_scale, config.crop_ratio, generator)
    jitter_factors = torch.stack(
        [
            uniform(1 - config.brightness, 1 + config.brightness, n, generator),
            uniform(1 - config.contrast, 1 + config.contrast, n, generator),
            uniform(1 - config.saturation, 1 + config.saturation, n, generator),
            uniform(-config.hue, config.hue, n, generator),
        ],
        dim=1,
    )
    return ViewParams(
        boxes=boxes,
        flip=bernoulli(config.flip_p, n, generator),
        jitter=bernoulli(config.jitter_p, n, generator),
        jitter_factors=jitter_factors,
        jitter_order=torch.rand(n, 4, device=generator.device, generator=generator).argsort(dim=1),
        grayscale=bernoulli(config.grayscale_p, n, generator),
        blur=bernoulli(config.blur_p, n, generator),
        blur_sigma=uniform(*config.blur_sigma, n, generator),
        solarize=bernoulli(config.solarize_p, n, generator),
    )


def apply_view(images: torch.Tensor, params: ViewParams, out_size: int) -> torch.Tensor:
    """Crop+flip, colour jitter, grayscale, blur, solarize: (B, 3, S, S) in [0, 1] -> (B, 3, out, out)."""
    views = resized_crop(images, params.boxes, params.flip, out_size).clamp(0, 1)
    views = color_jitter(views, params.jitter, params.jitter_factors, params.jitter_order)
    views = where_images(params.grayscale, grayscale(views).expand_as(views), views)
    blurred = torch.nonzero(params.blur).squeeze(1)
    if len(blurred):
        views[blurred] = gaussian_blur(views[blurred], params.blur_sigma[blurred])
    return where_images(params.solarize, torch.where(views < 0.5, views, 1 - views), views)


def make_view(
    images: torch.Tensor,
    config: ViewConfig,
    out_size: int,
    generator: torch.Generator,
    *,
    normalize: bool = True,
    global_batch: int = 0,
    offset: int = 0,
) -> torch.Tensor:
    """One augmented view of a batch: (B, 3, S, S) uint8 or float in [0, 1] -> (B, 3, out, out) float.

    Seven parameters: what to augment and how, then three named keywords with defaults for the
    callers that need them (the benchmarks' unnormalised views, and the shard of a global batch).

    Under data parallelism, `images` are rows offset..offset+B of a global batch of `global_batch`:
    every rank draws the global batch's parameters (with identically seeded generators) and uses its
    own rows, so the views do not depend on how many processes share the batch.
    """
    if images.dtype == torch.uint8:
        images = images.float() / 255
    params = sample_view_params(global_batch or len(images), images.shape[-1], config, generator)
    if global_batch:
        params = params.rows(offset, offset + len(images))
    views = apply_view(images, params, out_size)
    return normalize_imagenet(views) if normalize else views


def normalize_imagenet(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


class BYOLViews:
    """The paper's two views of a batch: `view_1, view_2 = BYOLViews(96)(images_uint8, generator)`.

    `crop_scale` changes both views' crop range (small images may want less aggressive crops), and
    `blur_sigma` both views' blur range in output pixels (the paper's 0.1–2.0 is for 224 px images).
    """

    def __init__(
        self,
        image_size: int,
        view_1: ViewConfig = VIEW_1,
        view_2: ViewConfig = VIEW_2,
        crop_scale: tuple[float, float] | None = None,
        blur_sigma: tuple[float, float] | None = None,
    ) -> None:
        if crop_scale is not None:
            view_1, view_2 = replace(view_1, crop_scale=crop_scale), replace(view_2, crop_scale=crop_scale)
        if blur_sigma is not None:
            view_1, view_2 = replace(view_1, blur_sigma=blur_sigma), replace(view_2, blur_sigma=blur_sigma)
        self.image_size = image_size
        self.view_1 = view_1
        self.view_2 = view_2

    def __call__(
        self,
        images: torch.Tensor,
        generator: torch.Generator,
        normalize: bool = True,
        global_batch: int = 0,
        offset: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        options = {"normalize": normalize, "global_batch": global_batch, "offset": offset}
        view_1 = make_view(images, self.view_1, self.image_size, generator, **options)
        return view_1, make_view(images, self.view_2, self.image_size, generator, **options)
