"""A drift check's report: published whole, or not at all."""

import errno
import os

import numpy as np
import pytest

from monitoring import drift, measure, report


def _check(rng):
    window = {measure.BRIGHTNESS: rng.normal(0.6, 0.1, 40), measure.FEATURES: rng.normal(size=(40, 4))}
    reference = {measure.BRIGHTNESS: rng.normal(0.4, 0.1, 30), measure.FEATURES: rng.normal(size=(30, 4))}
    verdict = drift.compare(window, reference, 0.05, measure.VECTORS)
    result = {"drift": verdict.drift, "verdict": verdict.line(), "tests": [t.to_json() for t in verdict.tests],
              "false_alarm_rate": 0.05, "served_version": 1, "checked_at": "2026-11-25T00:00:00+00:00",
              "window": {"images": 40, "sampled": 40, "spans": [1], "first": "-", "last": "-", "other_versions": 0},
              "reference": {"images": 30, "spans": [1]}, "unreadable": [], "unreadable_count": 0,
              "labeling_queue": None}
    return result, window, reference


def test_a_report_is_published_whole_and_a_half_one_a_killed_check_left_is_removed(tmp_path):
    stale = tmp_path / ".check-20261124T000000000000Z"
    stale.mkdir()
    (stale / report.PAGE).write_text("<html>half")
    page = report.write(tmp_path / "check-20261125T000000000000Z", *_check(np.random.default_rng(0)))
    assert page == tmp_path / "check-20261125T000000000000Z" / report.PAGE
    assert sorted(os.listdir(page.parent)) == sorted([report.PAGE, report.RESULT, report.FIGURE])
    assert os.listdir(tmp_path) == ["check-20261125T000000000000Z"]
    (tmp_path / ".check-my-notes").mkdir()  # a person's folder that shares the prefix stays
    report.write(tmp_path / "check-20261126T000000000000Z", *_check(np.random.default_rng(0)))
    assert sorted(os.listdir(tmp_path)) == [".check-my-notes", "check-20261125T000000000000Z",
                                            "check-20261126T000000000000Z"]


def test_a_report_whose_write_fails_leaves_no_folder_a_reader_could_take_for_one(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "figure", full)
    with pytest.raises(OSError):
        report.write(tmp_path / "check-20261125T000000000000Z", *_check(np.random.default_rng(0)))
    assert os.listdir(tmp_path) == []
