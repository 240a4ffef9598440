"""`make test-avx2` runs the kernels a CPU with AVX2 only runs: its settings reach TensorFlow, oneDNN, NumPy and
OpenBLAS.

Each library reads its setting once, as a process starts using it; a release that renamed one would leave the
target running this CPU's kernels without a word. A process of its own, with the settings `make` would give the
suite, says what each picked.
"""

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.e2e


def _settings_of(target: str) -> dict[str, str]:
    """The NAME=VALUE settings `make` gives the command the target runs: its recipe as `make -n` prints it, which
    must be those settings and then `make test`, nothing else."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    printed = subprocess.run(["make", "--no-print-directory", "-n", target], cwd=ROOT, capture_output=True,
                             text=True, env=env, timeout=120)
    assert printed.returncode == 0, printed.stderr[-2000:]
    words = shlex.split(printed.stdout.splitlines()[0])
    settings = {}
    while words and re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        settings[name] = value
    assert len(words) == 2 and pathlib.Path(words[0]).name == "make" and words[1] == "test", printed.stdout
    return settings


def test_make_test_avx2_gives_every_library_its_avx2_code():
    settings = _settings_of("test-avx2")
    assert set(settings) == {"TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE",
                             "NPY_DISABLE_CPU_FEATURES"}, settings
    script = textwrap.dedent("""
        import json
        import tensorflow as tf
        import threadpoolctl
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
        from tensorflow.python.util import _pywrap_util_port
        tf.matmul(tf.ones([64, 96]), tf.ones([96, 32])).numpy()  # Eigen's product calls oneDNN's, which logs its ISA
        print(json.dumps({"onednn_ops": _pywrap_util_port.IsMklEnabled(),
                          "numpy": [t for t in __cpu_dispatch__ if __cpu_features__.get(t)],
                          "openblas": [i.get("architecture") for i in threadpoolctl.threadpool_info()
                                       if i.get("internal_api") == "openblas"]}))
    """)
    env = {**os.environ, **settings, "ONEDNN_VERBOSE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    picked = json.loads(done.stdout.strip().splitlines()[-1])
    assert picked["onednn_ops"] is False, picked
    isa = re.findall(r"^onednn_verbose,info,cpu,isa:(.*)$", done.stdout + done.stderr, flags=re.M)
    assert isa, (done.stdout + done.stderr)[-2000:]
    # "Intel AVX2" on any CPU that has it; a CPU with less says what it has: never AVX-512 or AMX
    assert "512" not in isa[0] and "AMX" not in isa[0], isa
    assert "AVX2" in isa[0] or " avx2 " not in _cpu_flags(), isa
    assert not [target for target in picked["numpy"] if "512" in target], picked
    assert picked["openblas"] and set(picked["openblas"]) == {"Haswell"}, picked


def _cpu_flags() -> str:
    """The CPU's flags line, spaces around each, or "" where /proc/cpuinfo cannot be read."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    flags = re.search(r"^flags\s*:(.*)$", text, flags=re.M)
    return f" {flags.group(1).strip()} " if flags else ""
