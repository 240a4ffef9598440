"""tests.cpu_table: the per-file table docs/tests.md is made with, and its one-line refusals."""

import json
import subprocess
import sys

import pytest

from tests import cpu_table
from tests.helpers import ROOT


def _log(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_rows_of_one_file_from_several_workers_are_summed_and_the_most_cpu_comes_first(tmp_path, capsys):
    log = _log(tmp_path / "cpu.jsonl", [{"file": "a.py", "wall": 1.0, "cpu": 2.0, "tests": 3},
                                        {"file": "b.py", "wall": 5.0, "cpu": 10.0, "tests": 1},
                                        {"file": "a.py", "wall": 2.0, "cpu": 4.0, "tests": 2}])
    assert cpu_table.main([str(log), "--top", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["b.py", "1", "5", "10", "62.5"]
    assert lines[2].split() == ["the", "other", "1", "files", "5", "3", "6", "37.5"]
    assert lines[3].split() == ["all", "6", "8", "16"]


@pytest.mark.parametrize("content, says", [
    (None, "No such file"),
    ("", "no rows"),
    ('{"file": "a.py", "wall": 1, "cpu": 1, "tests": 1}\n{"file": "b.py"}\n', "line 2: not a row"),
    ("not json\n", "line 1: not a row"),
    (b"\xff\xfe\x00", "not a text file"),
])
def test_a_log_it_cannot_read_is_refused_in_one_line_naming_it(tmp_path, capsys, content, says):
    log = tmp_path / "cpu.jsonl"
    if isinstance(content, bytes):
        log.write_bytes(content)
    elif content is not None:
        log.write_text(content)
    assert cpu_table.main([str(log)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(log) in error and says in error, error


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    log = _log(tmp_path / "cpu.jsonl", [{"file": f"tests/test_{i}.py", "wall": 1, "cpu": i, "tests": 1}
                                        for i in range(5000)])
    # The first line only, as `| head -1` reads: the table's 5,000 rows outgrow the pipe's buffer.
    with subprocess.Popen([sys.executable, "-m", "tests.cpu_table", str(log), "--top", "5000"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        first = process.stdout.readline()
        process.stdout.close()
        error = process.stderr.read().decode()
        assert process.wait(timeout=30) == 0
    assert first.split()[0] == b"file"
    assert error == ""
