"""Decode the split's images once into a uint8 (N, 3, S, S) array on disk, memory-mapped for training.

Row i of the cache is row i of splits.csv. The cache is rebuilt only when the split or the size
changes (its JSON records both), so training never decodes a JPEG in its inner loop.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from byol.augment import MIN_IMAGE_SIZE
from byol.capacity import check_disk_space
from byol.data import Split, available_cpus
from byol.distributed import SINGLE_PROCESS, Ranks
from byol.errors import UserError
from byol.files import atomic_path, write_json

CACHE_VERSION = 1  # bump when the decoding below changes, so old caches are rebuilt


CHUNK_IMAGES = 256  # images per decoding job: the workers return them in order, chunk after chunk


def default_cache_size(image_size: int) -> int:
    """A little above the training size, so crops have real pixels to resample from."""
    return int(round(image_size * 1.15))


def load_square(path: Path, size: int) -> np.ndarray:
    """Decode, apply EXIF rotation, resize the short side to `size`, centre-crop: (3, S, S) uint8."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        image = ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC)
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def _load_chunk(args: tuple[Path, list[str], int]) -> np.ndarray:
    data_dir, paths, size = args
    return np.stack([load_square(data_dir / path, size) for path in paths])


def cache_paths(cache_dir: Path, size: int) -> tuple[Path, Path]:
    """The cache's array and its record of what it was built from, in `cache_dir` (RunOptions.cache_path)."""
    return Path(cache_dir) / f"images_{size}.npy", Path(cache_dir) / f"images_{size}.json"


def check_view_size(image_size: int, cache_size: int) -> None:
    """Both training stages' size check: a view of at least MIN_IMAGE_SIZE px, cut from the cache."""
    if image_size < MIN_IMAGE_SIZE:
        raise UserError(f"--image-size {image_size}: must be {MIN_IMAGE_SIZE} px or more")
    if image_size > cache_size:
        raise UserError(
            f"--image-size {image_size} is larger than --cache-size {cache_size}; "
            "raise --cache-size or lower --image-size"
        )


def recorded_meta(meta_path: Path) -> dict | None:
    """What the cache on disk was built from; None when unknown (a damaged record means: rebuild)."""
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None


def build_cache(split: Split, cache_dir: Path, size: int, workers: int | None = None) -> Path:
    """Decode every image of the split at `size` into `cache_dir` unless an up-to-date cache is there."""
    array_path, meta_path = cache_paths(cache_dir, size)
    meta = {
        "splits_sha256": split.fingerprint,
        "size": size,
        "count": len(split.table),
        "version": CACHE_VERSION,
    }
    if array_path.is_file() and recorded_meta(meta_path) == meta:
        return array_path
    paths = split.table["path"].tolist()
    check_disk_space(array_path, len(paths) * 3 * size * size)
    chunk = CHUNK_IMAGES
    jobs = [(split.data_dir, paths[i : i + chunk], size) for i in range(0, len(paths), chunk)]
    workers = workers or available_cpus()
    with atomic_path(array_path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), 3, size, size))
        row = 0
        with tqdm(total=len(paths), desc=f"cache {size}px", unit="img") as bar:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for images in pool.map(_load_chunk, jobs):
                    array[row : row + len(images)] = images
                    row += len(images)
                    bar.update(len(images))
        array.flush()
        del array
    write_json(meta_path, meta)
    return array_path


def load_cache(
    split: Split, cache_dir: Path, size: int, device: torch.device, ranks: Ranks = SINGLE_PROCESS
) -> torch.Tensor:
    """The cache as a (N, 3, S, S) uint8 tensor: memory-mapped on CPU, moved whole onto a GPU that fits it.

    Built first when missing or stale; under torchrun by rank 0 alone, while the others wait.
    """
    if ranks.is_main:
        build_cache(split, cache_dir, size)
    ranks.barrier()
    array_path, _ = cache_paths(cache_dir, size)
    # "c": copy-on-write, so the tensor is writable for torch but the file is never modified.
    images = torch.from_numpy(np.load(array_path, mmap_mode="c"))
    if device.type == "cuda":
        free_bytes, _ = torch.cuda.mem_get_info(device)
        if images.numel() < 0.5 * free_bytes:
            return images.to(device)
    return images
