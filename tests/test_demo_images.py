"""The generated demo/test images depend on their seed alone."""

from __future__ import annotations

import hashlib

from PIL import Image

from byol.demo_images import make_demo_images


def folder_digest(folder):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*.jpg")))).hexdigest()


def test_same_seed_gives_the_same_images_whatever_ran_before(tmp_path):
    first = folder_digest(make_demo_images(tmp_path / "a", per_class=3, size=24, seed=5))
    Image.effect_noise((24, 24), 20)  # advances the C library's rand(), which PIL's own noise uses
    again = folder_digest(make_demo_images(tmp_path / "b", per_class=3, size=24, seed=5))
    other = folder_digest(make_demo_images(tmp_path / "c", per_class=3, size=24, seed=6))
    assert first == again
    assert first != other
