"""Scan an ImageFolder-style directory, decode every file, and make the labelled/unlabelled/validation/test
split.

Every image is fully decoded (not only its header) so that truncated files are caught here, once,
instead of crashing a training run hours later. The split depends only on the seed and the set of
files: each file's rank is a hash of (seed, path), so the listing order of the file system never
matters and adding one file moves at most that file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from byol.decode import decode_all, decoded_table, files_under, list_files
from byol.errors import UserError
from byol.files import read_json, write_csv, write_json

SPLITS = ("labelled", "unlabelled", "validation", "test")
# Held out of pretraining and of classifier training: validation chooses (monitors, recipes, rates,
# epochs), test only scores the final tables.
HELD_OUT = ("validation", "test")
SPLITS_FILE = "splits.csv"
REJECTED_FILE = "rejected.csv"
SPLIT_CONFIG_FILE = "split_config.json"


def available_cpus() -> int:
    """Cores this process may run on. Slurm, taskset and docker --cpuset-cpus restrict the affinity
    mask, which os.cpu_count() ignores: on a 4-core share of a 128-core node it would start 128
    decoding processes."""
    if hasattr(os, "sched_getaffinity"):  # Linux; macOS and Windows have no affinity mask to read
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def list_classes(data_dir: Path) -> list[str]:
    """Class names are the sub-folders of `data_dir`, sorted (PetImages: Cat=0, Dog=1)."""
    if data_dir.exists() and not data_dir.is_dir():
        raise UserError(f"data dir {data_dir} is a file; pass the folder that holds one sub-folder per class")
    if not data_dir.is_dir():
        raise UserError(f"data dir {data_dir} does not exist; pass --data-dir PATH or --download")
    classes = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise UserError(
            f"data dir {data_dir} has {len(classes)} class folder(s); it needs 2 or more "
            "sub-folders, one per class (e.g. PetImages/Cat and PetImages/Dog)"
        )
    return classes


def check_out_dir(data_dir: Path, out_dir: Path) -> None:
    """Refuse an --out-dir inside --data-dir: its sub-folders (the cache, a results folder holding
    PNG figures) would be scanned as a class of images by the next split."""
    data, out = data_dir.resolve(), out_dir.resolve()
    if out == data or data in out.parents:
        raise UserError(
            f"--out-dir {out_dir} is inside --data-dir {data_dir}, where every sub-folder is a class; "
            "choose an --out-dir outside it"
        )


def split_rank(seed: int, path: str) -> str:
    """A file's place in the shuffled order: a hash, so listing order never matters."""
    return hashlib.sha256(f"{seed}:{path}".encode()).hexdigest()


def balanced_quotas(total: int, classes: list[str], seed: int) -> dict[str, int]:
    """Split `total` evenly over classes; the remainder goes to a seed-chosen set of classes."""
    base, remainder = divmod(total, len(classes))
    lucky = sorted(classes, key=lambda name: split_rank(seed, name))[:remainder]
    return {name: base + (name in lucky) for name in classes}


@dataclass(frozen=True)
class SplitSizes:
    """data_split.py's --n-labelled, --n-validation and --n-test: balanced across classes."""

    labelled: int
    validation: int
    test: int

    @property
    def total(self) -> int:
        return self.labelled + self.validation + self.test


def assign_splits(kept: pd.DataFrame, classes: list[str], sizes: SplitSizes, seed: int) -> pd.DataFrame:
    """Give each kept image a split: per class in hash order `test` first, then `labelled`, then
    `validation`, the rest `unlabelled`.

    Test is drawn first so that changing --n-labelled never changes the test set, and validation after
    the labelled images so that adding it changes neither the test set nor the labelled set of a split
    made before validation existed (it comes out of the unlabelled pool).
    """
    n_valid = len(kept)
    if sizes.total > n_valid:
        raise UserError(
            f"--n-labelled {sizes.labelled} + --n-validation {sizes.validation} + --n-test {sizes.test} = "
            f"{sizes.total} is more than the {n_valid} valid images; lower one of them"
        )
    quotas = {  # in the order they are drawn
        "test": balanced_quotas(sizes.test, classes, seed + 1),
        "labelled": balanced_quotas(sizes.labelled, classes, seed),
        "validation": balanced_quotas(sizes.validation, classes, seed + 2),
    }
    frames = []
    for class_name in classes:
        rows = kept[kept["class_name"] == class_name].copy()
        need = sum(quota[class_name] for quota in quotas.values())
        if len(rows) < need:
            asked = " + ".join(f"{quota[class_name]} {name}" for name, quota in quotas.items())
            raise UserError(
                f"class '{class_name}' has {len(rows)} valid images but the balanced split needs "
                f"{asked} = {need}; lower --n-labelled, --n-validation or --n-test, or add images"
            )
        rows["rank"] = [split_rank(seed, path) for path in rows["path"]]
        rows = rows.sort_values("rank")
        split = [name for name, quota in quotas.items() for _ in range(quota[class_name])]
        rows["split"] = split + ["unlabelled"] * (len(rows) - len(split))
        frames.append(rows.drop(columns="rank"))
    return pd.concat(frames).sort_values("path").reset_index(drop=True)


@dataclass(frozen=True)
class SplitResult:
    splits: pd.DataFrame  # path, label, class_name, split, width, height, format
    rejected: pd.DataFrame  # path, class_name, reason
    classes: list[str]


def make_split(
    data_dir: Path,
    sizes: SplitSizes,
    *,
    seed: int,
    workers: int,
    min_size: int,
    max_pixels: int,
    unlabelled_dir: Path | None = None,
) -> SplitResult:
    """Decode everything under `data_dir` (and `unlabelled_dir`) and split the images that decode.

    One parameter per data_split.py flag or group of flags: the split's sizes and seed, the decoding
    processes, the two limits an image must meet to be kept, and a folder of unlabelled images
    (add_unlabelled_folder); all but the first two by name.
    """
    classes = list_classes(data_dir)
    if unlabelled_dir is not None:
        check_unlabelled_dir(data_dir, unlabelled_dir)
    paths = list_files(data_dir, classes)
    decoded = decode_all(data_dir, paths, min_size, max_pixels, workers)
    table = decoded_table(decoded, [d.path.split("/", 1)[0] for d in decoded])
    table["label"] = table["class_name"].map({name: i for i, name in enumerate(classes)})
    is_kept = table["reason"].isna()
    rejected = table.loc[~is_kept, ["path", "class_name", "reason"]].reset_index(drop=True)
    kept = table.loc[is_kept, ["path", "label", "class_name", "width", "height", "format"]]
    if kept.empty:
        reasons = pd.Series([reason.split(":")[0] for reason in rejected["reason"]]).value_counts()
        found = ", ".join(f"{count} {reason}" for reason, count in reasons.items()) or "no files"
        raise UserError(f"no usable image under {data_dir} ({found}); point --data-dir at the images")
    # A folder with nothing usable (an empty folder, macOS's __MACOSX from an unzipped archive) would
    # still be a class: one with no training or test image, and a quota no --n-labelled can meet.
    empty = [name for name in classes if not (kept["class_name"] == name).any()]
    if empty:
        raise UserError(
            f"class folder(s) {', '.join(empty)} under {data_dir} hold no usable image; every "
            "sub-folder of --data-dir is a class: remove or fill them"
        )
    splits = assign_splits(kept, classes, sizes, seed)
    columns = ["path", "label", "class_name", "split", "width", "height", "format"]
    result = SplitResult(splits[columns], rejected, classes)
    if unlabelled_dir is not None:
        result = add_unlabelled_folder(result, data_dir, unlabelled_dir, workers, min_size, max_pixels)
    return result


UNLABELLED_LABEL = -1  # the label column of an image from --unlabelled-dir: it has none
UNLABELLED_CLASS = "(unlabelled folder)"


def check_unlabelled_dir(data_dir: Path, unlabelled_dir: Path) -> None:
    """--unlabelled-dir must be a folder apart from --data-dir: inside it, it would be a class; holding
    it, every labelled image would be listed twice."""
    if not unlabelled_dir.is_dir():
        raise UserError(f"--unlabelled-dir {unlabelled_dir} is not a folder; pass a folder of images")
    data, unlabelled = data_dir.resolve(), unlabelled_dir.resolve()
    if unlabelled == data or data in unlabelled.parents or unlabelled in data.parents:
        raise UserError(
            f"--unlabelled-dir {unlabelled_dir} and --data-dir {data_dir} overlap (one is or holds the "
            "other); pass a separate folder that holds only the unlabelled images"
        )
    if not any(files for _, _, files in os.walk(unlabelled)):
        raise UserError(f"--unlabelled-dir {unlabelled_dir} holds no files; point it at a folder of images")


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def add_unlabelled_folder(
    result: SplitResult, data_dir: Path, unlabelled_dir: Path, workers: int, min_size: int, max_pixels: int
) -> SplitResult:
    """`result` with every image under `unlabelled_dir` (nested folders too) that decodes added to the
    unlabelled split, with no label (UNLABELLED_LABEL) and its absolute path. An image whose bytes
    are those of a labelled-folder image (any split: test included, which must never be pretrained on)
    or of an earlier one in the folder is kept once, and the copy listed in rejected.csv."""
    root = unlabelled_dir.resolve()
    decoded = decode_all(root, sorted(files_under(root, root)), min_size, max_pixels, workers)
    table = decoded_table(decoded, [UNLABELLED_CLASS] * len(decoded))
    table["path"] = [(root / path).as_posix() for path in table["path"]]
    seen = {file_digest(data_dir / path): path for path in result.splits["path"]}
    reasons = []
    for path, reason in zip(table["path"], table["reason"]):
        if reason is None:
            digest = file_digest(Path(path))
            if digest in seen:
                reason = f"duplicate: the same bytes as {seen[digest]}"
            seen.setdefault(digest, path)
        reasons.append(reason)
    table["reason"] = reasons
    is_kept = table["reason"].isna()
    if not is_kept.any():
        found = f"{len(table)} file(s), none usable" if len(table) else "no files"
        raise UserError(f"--unlabelled-dir {unlabelled_dir}: {found}; point it at a folder of images")
    kept = table.loc[is_kept].assign(label=UNLABELLED_LABEL, split="unlabelled")
    splits = pd.concat([result.splits, kept[result.splits.columns]], ignore_index=True)
    rejected = pd.concat([result.rejected, table.loc[~is_kept, result.rejected.columns]], ignore_index=True)
    return SplitResult(splits, rejected, result.classes)


def summary_table(result: SplitResult) -> str:
    """Per class: found / kept / rejected and the size of each split, as aligned text."""
    header = ["class", "found", "kept", "rejected", *SPLITS]
    rows = []
    extra = [UNLABELLED_CLASS] if (result.splits["class_name"] == UNLABELLED_CLASS).any() else []
    for class_name in [*result.classes, *extra, "total"]:
        if class_name == "total":
            kept, rejected = result.splits, result.rejected
        else:
            kept = result.splits[result.splits["class_name"] == class_name]
            rejected = result.rejected[result.rejected["class_name"] == class_name]
        counts = kept["split"].value_counts()
        rows.append(
            [
                class_name,
                len(kept) + len(rejected),
                len(kept),
                len(rejected),
                *(int(counts.get(split, 0)) for split in SPLITS),
            ]
        )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).rjust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    return "\n".join(lines)


def save_split(result: SplitResult, data_dir: Path, out_dir: Path, settings: dict) -> None:
    """Write splits.csv, rejected.csv and split_config.json (settings, counts, splits.csv's hash)."""
    write_csv(out_dir / REJECTED_FILE, result.rejected)
    write_csv(out_dir / SPLITS_FILE, result.splits)
    counts = result.splits["split"].value_counts()
    write_json(
        out_dir / SPLIT_CONFIG_FILE,
        {
            **settings,
            "data_dir": str(Path(data_dir).resolve()),
            "classes": result.classes,
            "found": len(result.splits) + len(result.rejected),
            "kept": len(result.splits),
            "rejected": len(result.rejected),
            "split_sizes": {split: int(counts.get(split, 0)) for split in SPLITS},
            "splits_sha256": splits_fingerprint(out_dir / SPLITS_FILE),
        },
    )


def splits_fingerprint(splits_csv: Path) -> str:
    """A hash of splits.csv, recorded in split_config.json so later stages notice an edited split."""
    return hashlib.sha256(splits_csv.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Split:
    """A split as later stages read it: the table plus where the images live."""

    table: pd.DataFrame
    data_dir: Path
    classes: list[str]
    fingerprint: str

    def indices(self, *splits: str) -> list[int]:
        """Row numbers (also cache rows) of the images in the given splits."""
        return self.table.index[self.table["split"].isin(splits)].tolist()

    def held_out_fingerprint(self) -> str:
        """A hash of which images are held out of pretraining (validation and test, by path): what a
        byol.pt must share with the split it is scored on, so that it never pretrained on an image
        that scores or chooses. Labels and the pretraining images may differ."""
        held_out = self.table.loc[self.table["split"].isin(HELD_OUT), "path"]
        return hashlib.sha256("\n".join(sorted(map(str, held_out))).encode()).hexdigest()


def labelled_rows(split: Split, *splits: str) -> list[int]:
    """Split.indices of the images that have a label: all but those from --unlabelled-dir."""
    rows = split.indices(*splits)
    return [row for row, label in zip(rows, split.table.loc[rows, "label"]) if label != UNLABELLED_LABEL]


def split_files(where: Path) -> tuple[Path, Path]:
    """splits.csv and its split_config.json: `where` is either the CSV (the config beside it, whatever
    the CSV is called) or the folder holding both (RunOptions.split_path)."""
    where = Path(where)
    if where.suffix == ".csv" or where.is_file():
        return where, where.parent / SPLIT_CONFIG_FILE
    return where / SPLITS_FILE, where / SPLIT_CONFIG_FILE


def read_split(where: Path) -> Split:
    """Read `splits.csv` and its config (see split_files), checking they belong together and exist."""
    splits_csv, config_json = split_files(where)
    if not splits_csv.is_file() or not config_json.is_file():
        missing = splits_csv if not splits_csv.is_file() else config_json
        raise UserError(
            f"no split at {where} ({missing} missing); "
            f"run: python data_split.py --data-dir PATH --out-dir {splits_csv.parent}"
        )
    config = read_json(config_json, "re-run data_split.py to make a fresh split")
    fingerprint = splits_fingerprint(splits_csv)
    if config.get("splits_sha256") != fingerprint:
        raise UserError(
            f"{splits_csv} does not match {config_json} (edited or from another run); "
            "re-run data_split.py to make a fresh split"
        )
    data_dir = Path(config["data_dir"])
    table = pd.read_csv(splits_csv)
    missing = [path for path in table["path"] if not (data_dir / path).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} image(s) in {splits_csv} no longer exist under {data_dir} "
            f"(first: {missing[0]}); the split is stale, re-run data_split.py"
        )
    return Split(table, data_dir, list(config["classes"]), fingerprint)
