"""Tests that run code under a file size limit (RLIMIT_FSIZE, the suite's full disk) write no bytecode meanwhile:
a .pyc cut at the limit breaks every later import of its module in the suite's environment (tests.helpers
.file_size_limited says how)."""

import os
import pathlib
import re
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


def test_no_bytecode_is_written_within_the_block_by_this_process_or_one_it_starts(tmp_path, monkeypatch):
    _big_module(tmp_path)
    (tmp_path / "child_module.py").write_text((tmp_path / "big_module.py").read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    with no_bytecode_written():
        import big_module  # noqa: F401
        child = subprocess.run([sys.executable, "-c", "import child_module"], cwd=tmp_path, capture_output=True,
                               text=True, timeout=60)
    sys.modules.pop("big_module")
    assert child.returncode == 0, child.stderr[-2000:]
    assert not (tmp_path / "__pycache__").exists(), sorted((tmp_path / "__pycache__").iterdir())
    assert sys.dont_write_bytecode is False and "PYTHONDONTWRITEBYTECODE" not in os.environ


# What lowers a file size limit: Python's resource module, a shell's ulimit, util-linux's prlimit.
_LIMITS = re.compile(r"RLIMIT_FSIZE|ulimit +-[a-zA-Z]*f|\bprlimit\b")


def test_every_file_size_limit_in_the_tests_and_benchmarks_comes_with_no_bytecode_written():
    """Per file: a file that lowers the limit calls one of the two helpers (outside comments)."""
    this = pathlib.Path(__file__).resolve()
    limiting = {}
    for path in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]:
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        if path.resolve() != this and _LIMITS.search(code):
            limiting[str(path.relative_to(ROOT))] = code
    assert "tests/faults/test_full_disk.py" in limiting and len(limiting) >= 5, sorted(limiting)
    unguarded = [name for name, code in limiting.items()
                 if "file_size_limited(" not in code and "no_bytecode_written(" not in code]
    assert not unguarded, f"a file size limit without tests.helpers.file_size_limited: {unguarded}"
