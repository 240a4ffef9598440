"""`make test-avx2` computes as a CPU with AVX2 only does: its settings reach TensorFlow and oneDNN.

TensorFlow reads TF_ENABLE_ONEDNN_OPTS, and oneDNN ONEDNN_MAX_CPU_ISA, once, as a process starts using them; a
release that renamed either would leave the target running this CPU's kernels without a word. A process of its own,
with the recipe's settings, says which it got.
"""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


def _recipe_settings(target: str) -> dict[str, str]:
    """The NAME=VALUE settings that lead the target's recipe line in the Makefile."""
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(rf"^{re.escape(target)}:.*\n\t(.+)$", text, flags=re.M)
    assert recipe, f"no recipe for {target} in the Makefile"
    settings = re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]*)=(\S+)(?=\s)", recipe.group(1))
    assert settings, recipe.group(1)
    return dict(settings)


def test_make_test_avx2_runs_eigens_kernels_and_onednns_code_for_avx2_at_most():
    settings = _recipe_settings("test-avx2")
    assert settings == {"TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    script = textwrap.dedent("""
        import tensorflow as tf
        from tensorflow.python.util import _pywrap_util_port
        print("onednn ops", _pywrap_util_port.IsMklEnabled(), flush=True)
        tf.matmul(tf.ones([64, 96]), tf.ones([96, 32])).numpy()  # Eigen's product calls oneDNN's, which logs its ISA
    """)
    env = {**os.environ, **settings, "ONEDNN_VERBOSE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "onednn ops False" in done.stdout, done.stdout[-2000:]
    isa = re.findall(r"^onednn_verbose,info,cpu,isa:(.*)$", done.stdout + done.stderr, flags=re.M)
    assert isa, (done.stdout + done.stderr)[-2000:]
    # "Intel AVX2" on any CPU that has it; a CPU with less says what it has, never AVX-512 or AMX
    assert "AVX2" in isa[0] or "AVX2" not in _cpu_flags(), isa
    assert "512" not in isa[0] and "AMX" not in isa[0], isa


def _cpu_flags() -> str:
    try:
        return pathlib.Path("/proc/cpuinfo").read_text().upper()
    except OSError:
        return ""
