"""tests.cpu_table: the per-file table docs/tests.md is made with, and its one-line refusals."""

import json
import subprocess
import sys

import pytest

from tests import cpu_table
from tests.helpers import ROOT, stdout_buffering_env


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
    assert lines[2].split() == ["the", "other", "file", "5", "3", "6", "37.5"]
    assert lines[3].split() == ["all", "6", "8", "16"]


@pytest.mark.parametrize("content, says", [
    (None, "No such file"),
    ("", "no rows"),
    ('{"file": "a.py", "wall": 1, "cpu": 1, "tests": 1}\n{"file": "b.py"}\n', "line 2: not a row"),
    ("not json\n", "line 1: not a row"),
    (b"\xff\xfe\x00", "not a text file"),
    ('{"file": "a.py", "wall": 1, "cpu": 1, "tests": 1e400}\n', "line 1: not a row"),
    ('{"file": null, "wall": 1, "cpu": 1, "tests": 1}\n', "line 1: not a row"),
    ('{"file": "a.py", "wall": NaN, "cpu": 1, "tests": 1}\n', "line 1: not a row"),
    ('{"file": "a.py", "wall": 1, "cpu": Infinity, "tests": 1}\n', "line 1: not a row"),
    ('{"file": "a.py", "wall": 1, "cpu": -3, "tests": 1}\n', "line 1: not a row"),
    ('{"file": "a.py", "wall": 1, "cpu": "nan", "tests": 1}\n', "line 1: not a row"),
    ('{"file": "a.py", "wall": 1, "cpu": 1, "tests": 2.9}\n', "line 1: not a row"),
    ('{"file": "a.py", "wall": 1, "cpu": 1, "tests": true}\n', "line 1: not a row"),
    ("[" * 100_000 + "\n", "line 1: not a row"),
    ('{"file": "a.py", "wall": 1%s, "cpu": 1, "tests": 1}\n' % ("0" * 400), "line 1: not a row"),
    ('{"file": "a.py", "wall": 1e308, "cpu": 1e308, "tests": 1}\n', "line 1: not a row"),
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


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_a_reader_that_stops_early_gets_no_traceback(tmp_path, unbuffered):
    log = _log(tmp_path / "cpu.jsonl", [{"file": f"tests/test_{i}.py", "wall": 1, "cpu": i, "tests": 1}
                                        for i in range(5000)])
    # The first line only, as `| head -1` reads: the table's 5,000 rows outgrow the pipe's buffer.
    env = stdout_buffering_env(unbuffered)
    with subprocess.Popen([sys.executable, "-m", "tests.cpu_table", str(log), "--top", "5000"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as process:
        first = process.stdout.readline()
        process.stdout.close()
        error = process.stderr.read().decode()
        assert process.wait(timeout=30) == 0
    assert first.split()[0] == b"file"
    assert error == ""


def test_a_file_name_that_would_forge_a_line_or_move_the_terminal_is_shown_escaped(tmp_path, capsys):
    log = _log(tmp_path / "cpu.jsonl", [{"file": "a.py\nall 9 9 9\x1b[2J", "wall": 1, "cpu": 1, "tests": 1}])
    assert cpu_table.main([str(log)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].startswith("a.py\\nall 9 9 9\\x1b[2J"), lines


def test_an_empty_path_is_refused_by_name(capsys):
    with pytest.raises(SystemExit) as refused:
        cpu_table.main([""])
    assert refused.value.code == 2 and "LOG: an empty path" in capsys.readouterr().err


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_a_full_disk_under_its_output_is_one_line(tmp_path, unbuffered):
    log = _log(tmp_path / "cpu.jsonl", [{"file": "a.py", "wall": 1, "cpu": 1, "tests": 1}])
    env = stdout_buffering_env(unbuffered)
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "tests.cpu_table", str(log)], cwd=ROOT, stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: its output could not be written: OSError: [Errno 28]"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
