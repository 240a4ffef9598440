"""A command whose output's reader leaves early (`... | head`) ends quietly; a broken pipe elsewhere is a fault."""

import io
import os
import subprocess
import sys

import pytest

import pipeline_runner
from tests.helpers import ROOT


def _schedule_line(tmp_path, stdout):
    """`schedule --local`: prints its crontab line on stdout in a fraction of a second, TensorFlow not imported."""
    (tmp_path / "data" / "cat").mkdir(parents=True)
    return subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), "schedule", "--local", "--cron",
                           "0 3 * * *", "--output-dir", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data")],
                          stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120)


def test_a_reader_that_left_before_the_output_gets_no_error_line_or_traceback(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `head -1` does once it has its line
    try:
        result = _schedule_line(tmp_path, write_end)
    finally:
        os.close(write_end)
    assert result.returncode == 1, result.stderr
    for said in ("Traceback", "error:", "storage fault", "Exception ignored", "BrokenPipe"):
        assert said not in result.stderr, result.stderr


def test_the_same_command_with_its_reader_there_prints_its_line(tmp_path):
    result = _schedule_line(tmp_path, subprocess.PIPE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("0 3 * * * "), result.stdout


@pytest.mark.parametrize("reader_open", [True, False])
def test_only_a_pipe_whose_reader_closed_counts_as_the_reader_gone(monkeypatch, reader_open):
    read_end, write_end = os.pipe()
    if not reader_open:
        os.close(read_end)
    with os.fdopen(write_end, "w") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        assert pipeline_runner._stdout_reader_gone() is not reader_open
    if reader_open:
        os.close(read_end)


def test_a_stdout_that_is_no_file_is_not_a_reader_gone(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert pipeline_runner._stdout_reader_gone() is False
