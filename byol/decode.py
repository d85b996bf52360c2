"""Stage 1's first half: list the files of an image folder and fully decode each one in parallel,
saying why an unusable one is unusable, with a plan line once the decoding rate is known."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from byol.timing import finish_time, format_duration


@dataclass(frozen=True)
class Decoded:
    """What decoding one file found: `reason` is None for a usable image."""

    path: str  # relative to the data dir, with forward slashes
    width: int = 0
    height: int = 0
    image_format: str = ""
    reason: str | None = None


def list_files(data_dir: Path, classes: list[str]) -> list[str]:
    """Every file under each class folder (recursively), relative to `data_dir`, sorted.

    Broken links are listed too, so that rejected.csv says why they were left out.
    """
    return sorted(path for class_name in classes for path in files_under(data_dir / class_name, data_dir))


def files_under(folder: Path, data_dir: Path) -> list[str]:
    """Every file under `folder` (recursively, hidden files and folders left out), relative to `data_dir`."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            full = Path(root) / name
            if not full.is_dir() and not name.startswith("."):
                files.append(full.relative_to(data_dir).as_posix())
    return files


def decode_image(data_dir: Path, rel_path: str, min_size: int, max_pixels: int) -> Decoded:
    """Fully decode one file and say why it is unusable, if it is."""
    full = data_dir / rel_path
    try:
        size = full.stat().st_size
    except OSError as error:  # a broken link, or a file removed while the folder was scanned
        return Decoded(rel_path, reason=f"unreadable: {error.strerror or error}")
    if size == 0:
        return Decoded(rel_path, reason="empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette/EXIF warnings on images we keep anyway
            with Image.open(full) as image:
                width, height = image.size
                image_format = image.format or ""
                # Checked from the header, before decoding, so a bomb never allocates its pixels.
                if width * height > max_pixels:
                    return Decoded(
                        rel_path,
                        width,
                        height,
                        image_format,
                        f"too large: {width}x{height} is over the {max_pixels}-pixel "
                        "decompression-bomb limit",
                    )
                image.load()
                image.convert("RGB")
    except Image.DecompressionBombError:
        return Decoded(rel_path, reason="too large: over Pillow's decompression-bomb limit")
    except Image.UnidentifiedImageError:
        return Decoded(rel_path, reason="not an image")
    except PermissionError as error:
        return Decoded(rel_path, reason=f"unreadable: {error.strerror}")
    except (OSError, SyntaxError, ValueError) as error:
        return Decoded(rel_path, reason=f"broken image: {error}".replace("\n", " "))
    if min(width, height) < min_size:
        return Decoded(
            rel_path,
            width,
            height,
            image_format,
            f"too small: {width}x{height}, under {min_size} px on its short side",
        )
    return Decoded(rel_path, width, height, image_format)


def _decode_chunk(args: tuple[Path, list[str], int, int]) -> list[Decoded]:
    data_dir, paths, min_size, max_pixels = args
    return [decode_image(data_dir, path, min_size, max_pixels) for path in paths]


def decode_all(
    data_dir: Path, paths: list[str], min_size: int, max_pixels: int, workers: int
) -> list[Decoded]:
    """Decode `paths` in `workers` processes, with a progress bar; results in the order of `paths`.

    Once two chunks per process are decoded, the plan line states how long the rest will take at the
    rate of the second round (the first one's includes starting the processes).
    """
    chunk = 64
    jobs = [(data_dir, paths[i : i + chunk], min_size, max_pixels) for i in range(0, len(paths), chunk)]
    results: list[Decoded] = []
    rounds = [max(workers, 1), 2 * max(workers, 1)]  # chunks done at the two times the rate is taken from
    times: dict[int, float] = {}
    with tqdm(total=len(paths), desc="decode", unit="img") as bar:
        with contextlib.ExitStack() as stack:
            if workers <= 1:
                decoded_chunks = map(_decode_chunk, jobs)
            else:
                decoded_chunks = stack.enter_context(ProcessPoolExecutor(max_workers=workers)).map(
                    _decode_chunk, jobs
                )
            for done, decoded in enumerate(decoded_chunks, 1):
                results.extend(decoded)
                bar.update(len(decoded))
                if done in rounds:
                    times[done] = time.perf_counter()
                if done == rounds[1] and len(results) < len(paths):
                    rate = (len(results) - len(jobs[0][1]) * rounds[0]) / (times[done] - times[rounds[0]])
                    bar.write(decode_plan(len(results), len(paths), rate, workers))
    return results


def decode_plan(n_done: int, n_total: int, rate: float, workers: int) -> str:
    """Stage 1's plan: what is left to decode, and how long it will take at `rate` images/s."""
    left = (n_total - n_done) / max(rate, 1e-9)
    return (
        f"plan: decode and check {n_total} files in {max(workers, 1)} process(es). Measured here after the "
        f"first {n_done}: {rate:.0f} images/s; about {format_duration(left)} more, finishing about "
        f"{finish_time(left)}"
    )


def decoded_table(decoded: list[Decoded], class_names: list[str]) -> pd.DataFrame:
    """decode_all's results as a table: path, class_name, width, height, format, reason (None: kept)."""
    return pd.DataFrame(
        {
            "path": [d.path for d in decoded],
            "class_name": class_names,
            "width": [d.width for d in decoded],
            "height": [d.height for d in decoded],
            "format": [d.image_format for d in decoded],
            "reason": [d.reason for d in decoded],
        }
    )
