"""Stage 1: decoding, rejecting, and splitting (byol/data.py and data_split.py)."""

from __future__ import annotations

import json
import os
import random

import pandas as pd
import pytest
from conftest import REAL_DATA, ROOT, add_faults, assert_one_error_line, run_script, run_split

from byol import data, decode
from byol.data import SplitSizes, make_split, read_split
from byol.decode import decode_plan
from byol.errors import UserError
from byol.timing import format_duration


def split_files(out_dir):
    return pd.read_csv(out_dir / "splits.csv"), pd.read_csv(out_dir / "rejected.csv")


def test_clean_folder_is_split_balanced_with_exact_counts(image_folder, tmp_path):
    folder = image_folder(per_class=30)
    out = tmp_path / "out"
    result = run_split(folder, out, 10, 20, workers=2)
    assert result.returncode == 0, result.stderr
    splits, rejected = split_files(out)
    assert {"path", "label", "class_name", "split"} <= set(splits.columns)
    assert len(rejected) == 0
    counts = splits.groupby(["class_name", "split"]).size()
    assert counts["circle", "labelled"] == 5 and counts["square", "labelled"] == 5
    assert counts["circle", "test"] == 10 and counts["square", "test"] == 10
    assert counts["circle", "unlabelled"] == 15 and counts["square", "unlabelled"] == 15
    assert dict(zip(splits["class_name"], splits["label"])) == {"circle": 0, "square": 1}
    assert (folder / splits["path"].iloc[0]).is_file()  # paths are relative to the data dir
    config = json.loads((out / "split_config.json").read_text())
    assert config["kept"] == 60 and config["split_sizes"]["test"] == 20
    assert "labelled" in result.stdout and "total" in result.stdout  # the summary table


def test_every_fault_of_the_real_archive_is_rejected_with_its_reason(image_folder):
    folder = image_folder(per_class=10)
    expected = add_faults(folder, "circle")
    result = make_split(folder, SplitSizes(4, 0, 4), seed=0, workers=1, min_size=32, max_pixels=10_000_000)
    reasons = dict(zip(result.rejected["path"], result.rejected["reason"]))
    assert set(reasons) == set(expected)
    for path, prefix in expected.items():
        assert reasons[path].startswith(prefix), (path, reasons[path])
    kept = set(result.splits["path"])
    for name in ("cmyk.jpg", "grey.jpg", "palette.gif", "rgba.png", "really_a_png.jpg"):
        assert f"circle/{name}" in kept
    assert result.splits.set_index("path").loc["circle/really_a_png.jpg", "format"] == "PNG"


def test_default_bomb_limit_rejects_an_image_over_pillows_limit(image_folder, tmp_path):
    folder = image_folder(per_class=6)
    add_faults(folder, "square")
    out = tmp_path / "out"
    result = run_split(folder, out, 2, 2)
    assert result.returncode == 0, result.stderr
    _, rejected = split_files(out)
    reasons = dict(zip(rejected["path"], rejected["reason"]))
    assert "decompression-bomb" in reasons["square/bomb.png"]


@pytest.mark.parametrize("workers", [1, 2])
def test_split_ignores_listing_order(image_folder, monkeypatch, workers):
    folder = image_folder(per_class=25)
    first = make_split(
        folder, SplitSizes(6, 0, 10), seed=3, workers=workers, min_size=8, max_pixels=10**8
    ).splits
    real_walk = os.walk

    def shuffled_walk(top, *args, **kwargs):
        for root, dirs, names in real_walk(top, *args, **kwargs):
            random.Random(len(names)).shuffle(names)
            names.reverse()
            yield root, dirs, names

    monkeypatch.setattr(decode.os, "walk", shuffled_walk)
    second = make_split(
        folder, SplitSizes(6, 0, 10), seed=3, workers=workers, min_size=8, max_pixels=10**8
    ).splits
    pd.testing.assert_frame_equal(first, second)
    other_seed = make_split(
        folder, SplitSizes(6, 0, 10), seed=4, workers=1, min_size=8, max_pixels=10**8
    ).splits
    assert not first["split"].equals(other_seed["split"])


def test_remainder_is_spread_and_total_is_exact(image_folder):
    folder = image_folder(per_class=20)
    (folder / "triangle").mkdir()
    for path in sorted((folder / "circle").iterdir())[:20]:
        (folder / "triangle" / path.name).write_bytes(path.read_bytes())
    splits = make_split(folder, SplitSizes(11, 5, 7), seed=0, workers=1, min_size=8, max_pixels=10**8).splits
    labelled = splits[splits["split"] == "labelled"]["class_name"].value_counts()
    test = splits[splits["split"] == "test"]["class_name"].value_counts()
    assert labelled.sum() == 11 and sorted(labelled) == [3, 4, 4]
    assert test.sum() == 7 and sorted(test) == [2, 2, 3]
    validation = splits[splits["split"] == "validation"]["class_name"].value_counts()
    assert validation.sum() == 5 and sorted(validation) == [1, 2, 2]
    assert sorted(splits["label"].unique()) == [0, 1, 2]


def test_validation_comes_out_of_the_unlabelled_pool_leaving_labelled_and_test_as_they_were(image_folder):
    # A split made before the validation split existed (--n-validation 0) keeps its labelled and test
    # images; the validation images are balanced, held out of both and taken from the unlabelled ones.
    folder = image_folder(per_class=20)
    before = make_split(folder, SplitSizes(6, 0, 10), seed=0, workers=1, min_size=8, max_pixels=10**8).splits
    after = make_split(folder, SplitSizes(6, 8, 10), seed=0, workers=1, min_size=8, max_pixels=10**8).splits
    for split in ("labelled", "test"):
        assert set(after.loc[after["split"] == split, "path"]) == set(
            before.loc[before["split"] == split, "path"]
        )
    validation = after[after["split"] == "validation"]
    assert validation["class_name"].value_counts().tolist() == [4, 4]
    assert set(validation["path"]) <= set(before.loc[before["split"] == "unlabelled", "path"])


def test_zero_test_images_gives_the_plain_labelled_vs_rest_split(image_folder):
    folder = image_folder(per_class=15)
    splits = make_split(folder, SplitSizes(10, 0, 0), seed=0, workers=1, min_size=8, max_pixels=10**8).splits
    assert set(splits["split"]) == {"labelled", "unlabelled"}
    assert (splits["split"] == "labelled").sum() == 10


def test_changing_n_labelled_keeps_the_test_set(image_folder):
    folder = image_folder(per_class=30)
    small = make_split(folder, SplitSizes(4, 0, 10), seed=0, workers=1, min_size=8, max_pixels=10**8).splits
    large = make_split(folder, SplitSizes(20, 0, 10), seed=0, workers=1, min_size=8, max_pixels=10**8).splits
    assert set(small.loc[small["split"] == "test", "path"]) == set(
        large.loc[large["split"] == "test", "path"]
    )


def written(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def macos_zip_folder(folder):
    """What unzipping an archive made on a Mac adds: __MACOSX holding only AppleDouble '._' files."""
    written(folder / "__MACOSX" / "circle" / "._0.png", b"\0\5\26\7")
    return folder


def only_broken_files(folder):
    written(folder / "cat" / "text.jpg", b"not a picture")
    written(folder / "dog" / "empty.jpg", b"")
    return folder


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda f, t: ["--data-dir", t / "nowhere"], "does not exist"),
        (lambda f, t: ["--data-dir", f / "circle"], "class folder"),
        (
            lambda f, t: ["--data-dir", f, "--n-labelled", 30, "--n-test", 0, "--n-validation", 0],
            "class 'square' has 14 valid",
        ),
        (
            lambda f, t: ["--data-dir", f, "--n-labelled", 20, "--n-test", 30, "--n-validation", 0],
            "more than the 33 valid",
        ),
        (lambda f, t: ["--data-dir", f, "--n-test", -1, "--n-validation", 0], "--n-test"),
        (lambda f, t: ["--data-dir", f, "--n-labelled", -5], "--n-labelled"),
        (lambda f, t: ["--data-dir", f, "--n-labelled", 4, "--n-test", 4], "--n-validation 2500"),
        (lambda f, t: ["--data-dir", f, "--workers", 0], "--workers"),
        (lambda f, t: ["--data-dir", written(t / "a_file.jpg", b"x")], "a_file.jpg is a file"),
        (lambda f, t: ["--data-dir", only_broken_files(t / "broken")], "(1 not an image, 1 empty file)"),
        (lambda f, t: ["--data-dir", macos_zip_folder(f)], "class folder(s) __MACOSX under"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_the_previous_split(
    image_folder, tmp_path, make_args, message
):
    folder = image_folder(per_class=14)
    add_faults(folder, "circle")  # 14 good circles; the faults must not count as valid
    out = tmp_path / "out"
    good = run_split(folder, out, 4, 4)
    assert good.returncode == 0, good.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = run_script(
        "data_split.py", *make_args(folder, tmp_path), "--out-dir", out, "--workers", 1, "--overwrite"
    )
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_earlier_split_is_replaced_only_with_overwrite(image_folder, tmp_path):
    folder, out = image_folder(per_class=10), tmp_path / "out"
    args = ["--data-dir", folder, "--out-dir", out, "--n-labelled", 4, "--n-validation", 2, "--n-test", 4]
    assert run_script("data_split.py", *args).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    refused = run_script("data_split.py", *args[:-6], "--n-labelled", 6, "--n-validation", 2, "--n-test", 4)
    assert refused.returncode == 2 and "already holds an earlier run (splits.csv" in refused.stderr
    assert "replace it with --overwrite" in refused.stderr and "--resume" not in refused.stderr
    assert_one_error_line(refused.stderr)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert (
        run_script(
            "data_split.py", *args[:-6], "--n-labelled", 6, "--n-validation", 2, "--n-test", 4, "--overwrite"
        ).returncode
        == 0
    )
    assert (pd.read_csv(out / "splits.csv")["split"] == "labelled").sum() == 6


@pytest.mark.parametrize("inside", [".", "results", "circle/results"])
def test_an_out_dir_inside_the_data_dir_is_refused(image_folder, inside):
    # Its cache and figures would be a class of images to the next split.
    folder = image_folder(per_class=6)
    result = run_script("data_split.py", "--data-dir", folder, "--out-dir", folder / inside, "--workers", 1)
    assert result.returncode == 2 and "is inside --data-dir" in result.stderr, result.stderr
    assert not (folder / inside / "splits.csv").exists()


def test_later_stages_notice_an_edited_or_stale_split(image_folder, tmp_path):
    folder = image_folder(per_class=10)
    out = tmp_path / "out"
    assert run_split(folder, out, 4, 4).returncode == 0
    split = read_split(out)
    assert len(split.indices("labelled")) == 4 and len(split.indices("test")) == 4
    assert split.classes == ["circle", "square"]

    (folder / split.table["path"].iloc[0]).unlink()
    with pytest.raises(UserError, match="no longer exist"):
        read_split(out)
    (out / "splits.csv").write_text((out / "splits.csv").read_text().replace("labelled", "test", 1))
    with pytest.raises(UserError, match="does not match"):
        read_split(out)
    (out / "splits.csv").unlink()
    with pytest.raises(UserError, match="data_split.py"):
        read_split(out)


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="real PetImages not present")
@pytest.mark.slow
def test_real_petimages_split(tmp_path):
    result = run_script("data_split.py", "--data-dir", REAL_DATA, "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    splits, _ = split_files(tmp_path)
    counts = splits.groupby(["class_name", "split"]).size()
    assert counts["Cat", "labelled"] == 125 and counts["Dog", "labelled"] == 125
    assert counts["Cat", "test"] == 1250 and counts["Dog", "test"] == 1250
    assert counts["Cat", "validation"] == 1250 and counts["Dog", "validation"] == 1250
    assert (splits["split"] == "unlabelled").sum() == 24998 - 250 - 2500 - 2500
    # The validation images came out of the unlabelled pool: the committed study's split (made before
    # validation existed) has the same labelled and test images.
    committed = pd.read_csv(ROOT / "results" / "archive" / "study_12_epochs" / "splits.csv")
    for split in ("labelled", "test"):
        assert set(splits.loc[splits["split"] == split, "path"]) == set(
            committed.loc[committed["split"] == split, "path"]
        )


def test_decoding_states_its_plan_from_the_speed_of_its_first_chunks(image_folder, capsys, monkeypatch):
    # 3 chunks of 64 files, 1 process: the rate of the second chunk, stated before the third.
    folder = image_folder(per_class=96)
    events = []
    real_chunk, real_plan = decode._decode_chunk, decode.decode_plan
    monkeypatch.setattr(decode, "_decode_chunk", lambda job: events.append("chunk") or real_chunk(job))
    monkeypatch.setattr(decode, "decode_plan", lambda *args: events.append("plan") or real_plan(*args))
    # The clock read when each round is done: chunk 2's 64 images in 0.5 s, 128 images/s.
    clock = iter([10.0, 10.5])
    monkeypatch.setattr(decode.time, "perf_counter", lambda: next(clock))
    make_split(folder, SplitSizes(4, 0, 4), seed=0, workers=1, min_size=8, max_pixels=10**8)
    assert events == ["chunk", "chunk", "plan", "chunk"]
    out = capsys.readouterr().out
    assert "files in 1 process(es). Measured here after the first 128: 128 images/s; about 1 s more" in out
    # At 64 images/s, the other 64 in about 1 s.
    assert decode_plan(128, 192, 64.0, 1).startswith(
        "plan: decode and check 192 files in 1 process(es). Measured here after the first 128: 64 images/s; "
        "about 1 s more, finishing about "
    )
    assert "about 4 min more" in decode_plan(100, 7300, 100 / 3, 2)  # 216 s to go


def test_durations_read_in_seconds_minutes_or_hours():
    assert [format_duration(s) for s in (0.2, 42, 59.4, 90, 3600, 7500)] == [
        "1 s", "42 s", "59 s", "2 min", "1 h 00 min", "2 h 05 min",
    ]  # fmt: skip


def unlabelled_pile(image_folder, labelled):
    """A folder of unlabelled images, nested, holding copies of two labelled-folder images (one of
    them in the test split) and one image twice."""
    pile = image_folder(per_class=6, size=44, name="pile")  # 12 images in two sub-folders: no classes here
    nested = pile / "square" / "deeper"
    nested.mkdir()
    (pile / "square" / "0.jpg").rename(nested / "0.jpg")
    (pile / "top.jpg").write_bytes((pile / "circle" / "1.jpg").read_bytes())  # a copy inside the pile
    return pile


def test_an_unlabelled_folder_joins_the_unlabelled_split_without_labels(image_folder, tmp_path):
    folder = image_folder(per_class=12)
    pile = unlabelled_pile(image_folder, folder)
    out = tmp_path / "out"
    args = ["--data-dir", folder, "--out-dir", out, "--n-labelled", 4, "--n-test", 4, "--n-validation", 4]
    assert run_script("data_split.py", *args, "--workers", 1).returncode == 0
    test_image = pd.read_csv(out / "splits.csv").query("split == 'test'")["path"].iloc[0]
    (pile / "copy_of_test.jpg").write_bytes((folder / test_image).read_bytes())
    result = run_script("data_split.py", *args, "--unlabelled-dir", pile, "--workers", 2, "--overwrite")
    assert result.returncode == 0, result.stderr
    splits, rejected = split_files(out)
    extra = splits[splits["class_name"] == data.UNLABELLED_CLASS]
    # 12 pile images + its inner copy + the test copy: 12 kept, 2 duplicates reported
    assert len(extra) == 12 and (extra["split"] == "unlabelled").all()
    assert (extra["label"] == data.UNLABELLED_LABEL).all()
    assert any(path.endswith("square/deeper/0.jpg") for path in extra["path"])  # nested folders too
    duplicates = rejected[rejected["reason"].str.startswith("duplicate")]
    assert len(duplicates) == 2 and any(test_image in reason for reason in duplicates["reason"])
    # The labelled folder's split is the one it had without the pile.
    labelled_part = splits[splits["class_name"] != data.UNLABELLED_CLASS]
    assert len(labelled_part) == 24 and (labelled_part["split"] == "test").sum() == 4
    assert data.UNLABELLED_CLASS in result.stdout  # its own row in the summary table
    split = read_split(out)  # later stages find every image, by its absolute path
    assert len(split.indices("unlabelled")) == 12 + 12
    # Images without a label are never drawn as labelled ones, nor as the diagnostic k-NN's voters.
    from byol.evaluate import diagnostic_voters
    from byol.labelled_sets import balanced_subset

    for seed in range(1, 4):
        drawn = balanced_subset(split, 4, seed, "per-seed")
        assert (split.table.loc[drawn, "label"] >= 0).all()
    assert (split.table.loc[diagnostic_voters(split, 100), "label"] >= 0).all()


def empty_folder(path):
    path.mkdir()
    (path / "notes.txt").write_text("no images here")
    return path


@pytest.mark.parametrize(
    "unlabelled, message",
    [
        (lambda f, t: empty_folder(t / "empty"), "1 file(s), none usable; point it at a folder of images"),
        (lambda f, t: f, "overlap (one is or holds the other)"),
        (lambda f, t: f / "circle", "overlap (one is or holds the other)"),
        (lambda f, t: t / "missing", "is not a folder"),
        (lambda f, t: (t / "nothing").mkdir() or t / "nothing", "holds no files"),
    ],
)
def test_a_bad_unlabelled_folder_is_one_line_exit_2(image_folder, tmp_path, unlabelled, message):
    folder = image_folder(per_class=8)
    args = ["--data-dir", folder, "--out-dir", tmp_path / "out", "--n-labelled", 4, "--n-test", 4]
    result = run_script(
        "data_split.py", *args, "--n-validation", 0, "--unlabelled-dir", unlabelled(folder, tmp_path)
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error" in line]  # beside the bars
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr
    assert not (tmp_path / "out" / "splits.csv").exists()
