"""pytest's exit status is pytest's: 0 when every test passed, 1 when one failed, even when the interpreter
crashes while it shuts down (as protobuf's C extension can after TensorFlow Transform ran: exit 139)."""

import os
import subprocess
import sys

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Dies of SIGSEGV when the interpreter tears the test module down, after every exit handler ran: where the
# protobuf crash happens.
_CRASHES_AT_TEARDOWN = """
import os
import signal


class _CrashOnTeardown:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGSEGV)


_crash = _CrashOnTeardown()


def test_it():
    assert {outcome}
"""


@pytest.mark.parametrize("passes, status", [(True, 0), (False, 1)], ids=["passing", "failing"])
@pytest.mark.parametrize("workers", [[], ["--numprocesses=1"]], ids=["one process", "xdist"])
def test_pytest_exits_with_its_own_status_despite_a_crash_at_interpreter_shutdown(tmp_path, passes, status,
                                                                                 workers):
    test_file = tmp_path / "test_tiny.py"
    test_file.write_text(_CRASHES_AT_TEARDOWN.format(outcome=passes))
    junit = tmp_path / "junit.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", *workers,
         f"--junitxml={junit}", str(test_file)],
        # The child's CPU is this test's (TEST_CPU_LOG counts waited-for children): it logs none of its own.
        cwd=tmp_path, env={**{k: v for k, v in os.environ.items() if k != "TEST_CPU_LOG"}, "PYTHONPATH": _REPO},
        capture_output=True, text=True, timeout=300)
    assert result.returncode == status, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    summary = result.stdout.strip().splitlines()[-1]
    assert ("1 passed" if passes else "1 failed") in summary, result.stdout[-2000:]
    assert f'failures="{0 if passes else 1}"' in junit.read_text(), "the junit report was written whole"
