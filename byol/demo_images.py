"""Generate a small two-class image folder for demos and tests (no download, no real photos).

Class `circle` holds discs and class `square` squares, on noisy backgrounds with random colours,
sizes and positions: easy enough that a classifier learns it in seconds, hard enough that the
result is not trivial. Usage: python -m byol.demo_images OUT_DIR [--per-class N] [--size S]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "square")


def gaussian_noise(size: int, sigma: float, rng: random.Random) -> Image.Image:
    # Not Image.effect_noise: it draws from the C library's rand(), so the images would depend on
    # what else ran in the process and on the platform, not on the seed alone.
    pixels = bytes(min(255, max(0, round(rng.gauss(128, sigma)))) for _ in range(size * size))
    return Image.frombytes("L", (size, size), pixels)


def draw_image(class_name: str, size: int, rng: random.Random) -> Image.Image:
    background = tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    noise = gaussian_noise(size, rng.uniform(10, 40), rng).convert("RGB")
    image = Image.blend(image, noise, 0.3)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 3)):
        radius = rng.uniform(0.12, 0.3) * size
        cx, cy = rng.uniform(radius, size - radius), rng.uniform(radius, size - radius)
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        colour = tuple(rng.randrange(256) for _ in range(3))
        if class_name == "circle":
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1)))


def make_demo_images(out_dir: Path, per_class: int = 120, size: int = 64, seed: int = 0) -> Path:
    """Write `per_class` JPEGs per class under out_dir/<class>/ and return out_dir."""
    rng = random.Random(seed)
    for class_name in CLASSES:
        class_dir = out_dir / class_name
        class_dir.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_image(class_name, size, rng).save(class_dir / f"{i}.jpg", quality=90)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--per-class", type=int, default=120)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make_demo_images(args.out_dir, args.per_class, args.size, args.seed)
    print(f"wrote {2 * args.per_class} images to {args.out_dir}")


if __name__ == "__main__":
    main()
