"""Tests that run code under a file size limit (RLIMIT_FSIZE, the suite's full disk) write no bytecode meanwhile:
a .pyc cut at the limit breaks every later import of its module in the suite's environment (tests.helpers
.file_size_limited says how)."""

import os
import pathlib
import subprocess
import sys

from tests.helpers import ROOT, file_size_limited, no_bytecode_written

LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))
sys.path.insert(0, sys.argv[1])
import big_module
"""


def _big_module(folder: pathlib.Path) -> None:
    (folder / "big_module.py").write_text("NUMBERS = [" + ", ".join(str(n) for n in range(3000)) + "]\n")


def test_a_module_first_imported_under_a_limit_imports_again_after_it(tmp_path):
    _big_module(tmp_path)
    for _ in range(2):
        limited = subprocess.run([sys.executable, "-c", LIMITED, str(tmp_path)], capture_output=True, text=True,
                                 env=file_size_limited(), timeout=60)
        assert limited.returncode == 0, limited.stderr[-2000:]
    again = subprocess.run([sys.executable, "-c", "import big_module; print(len(big_module.NUMBERS))"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60,
                           env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
    assert again.returncode == 0 and again.stdout.split() == ["3000"], again.stderr[-2000:]


def test_no_bytecode_is_written_in_this_process_within_the_block(tmp_path, monkeypatch):
    _big_module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    with no_bytecode_written():
        import big_module  # noqa: F401
    sys.modules.pop("big_module")
    assert not (tmp_path / "__pycache__").exists() and sys.dont_write_bytecode is False


def test_every_file_size_limit_in_the_tests_comes_with_no_bytecode_written():
    limiting = [path for path in (ROOT / "tests").rglob("*.py")
                if "RLIMIT_FSIZE" in (text := path.read_text()) and "setrlimit" in text
                and path.name != pathlib.Path(__file__).name]
    assert limiting, "the suite's full-disk tests set file size limits"
    unguarded = [str(path.relative_to(ROOT)) for path in limiting
                 if "file_size_limited(" not in path.read_text() and "no_bytecode_written(" not in path.read_text()]
    assert not unguarded, f"a file size limit without tests.helpers.file_size_limited: {unguarded}"
