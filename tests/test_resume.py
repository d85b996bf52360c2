"""The --resume check both stages share (byol/resume.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from byol.errors import UserError
from byol.pretrain import PretrainConfig
from byol.resume import check_resumable, check_resume_config


def test_a_changed_setting_is_refused_in_one_line_naming_the_flag_and_both_values():
    saved = {"epochs": 30, "probe_lrs": [1e-3], "world_size": 1}
    with pytest.raises(UserError) as refused:
        check_resumable(Path("run/metrics.csv"), saved, {"epochs": 3, "probe_lrs": [1e-3]}, "do X")
    assert (
        str(refused.value) == "--resume: run/metrics.csv was trained with --epochs 30, this run has 3; do X"
    )
    with pytest.raises(UserError, match="with the number of processes 1, this run has 2"):
        check_resumable(Path("c.pt"), saved, {"world_size": 2}, "do X")
    # Settings that may change are returned, not refused; unchanged ones are neither.
    given = {"epochs": 30, "probe_lrs": [0.5]}
    assert check_resumable(Path("m.csv"), saved, given, "do X", may_change=("probe_lrs",)) == ["probe_lrs"]
    assert check_resumable(Path("m.csv"), saved, {"epochs": 30}, "do X") == []


def test_pretraining_resume_keeps_the_saved_config_and_checks_only_the_flags_given():
    saved = {**PretrainConfig(epochs=7, tau_base=0.97).__dict__}
    # Flags left at their defaults take the checkpoint's values; a given flag that agrees is fine.
    resumed = check_resume_config(Path("ckpt.pt"), saved, PretrainConfig(tau_base=0.97))
    assert resumed == PretrainConfig(epochs=7, tau_base=0.97)
    with pytest.raises(UserError, match="trained with --tau-base 0.97, this run has 0.9; drop the flag"):
        check_resume_config(Path("ckpt.pt"), saved, PretrainConfig(tau_base=0.9))


def test_a_setting_an_older_file_lacks_counts_as_what_it_stood_for(tmp_path):
    from byol.resume import check_resumable

    trained = tmp_path / "classifier_metrics.csv"
    saved = {"epochs": 30}  # written before bn_images existed
    assert (
        check_resumable(trained, saved, {"epochs": 30, "bn_images": 0}, "fix it", defaults={"bn_images": 0})
        == []
    )
    with pytest.raises(UserError, match="--bn-images None, this run has 2048"):
        check_resumable(trained, saved, {"epochs": 30, "bn_images": 2048}, "fix it")
    with pytest.raises(UserError, match="--bn-images 0, this run has 2048"):
        check_resumable(
            trained, saved, {"epochs": 30, "bn_images": 2048}, "fix it", defaults={"bn_images": 0}
        )
