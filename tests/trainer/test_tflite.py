"""TFLite's native log lines are held back when only errors are asked for, and shown when the work fails."""

import os
import subprocess
import sys

from tests.helpers import ROOT

SCRIPT = """
import os, sys
from trainer.tflite import native_logs_held
with native_logs_held():
    os.write(2, b"W0000 native converter remark\\n")
print("after", flush=True)
try:
    with native_logs_held():
        os.write(2, b"E0000 native detail of the failure\\n")
        raise RuntimeError("conversion failed")
except RuntimeError:
    pass
os.write(2, b"plain stderr still works\\n")
"""


def _run(level):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60)


def test_native_remarks_are_held_back_and_a_failures_detail_is_shown():
    result = _run("3")
    assert result.returncode == 0 and result.stdout == "after\n"
    assert result.stderr == "E0000 native detail of the failure\nplain stderr still works\n"


def test_everything_is_shown_when_native_logs_are_asked_for():
    for level in (None, "0"):
        result = _run(level)
        assert "W0000 native converter remark" in result.stderr
        assert "E0000 native detail of the failure" in result.stderr
