"""Ctrl-C under `insistent()`: real SIGINTs sent to a child process whose main thread swallows the first."""

import os
import signal
import subprocess
import sys
import time

from tests.helpers import ROOT

# The child's "library" call swallows a KeyboardInterrupt in its first second, as a bare `except:` does, then
# goes on for 15 s; the child reports what reached its own handler. It says READY once the handler is in place.
CHILD = """
import os, signal, sys, time
from orchestration import interrupts

def library_call(seconds):
    try:
        time.sleep(1)  # the first SIGINT arrives here
    except:  # noqa: E722 - what the run must survive
        print("swallowed", flush=True)
    deadline = time.time() + seconds
    while time.time() < deadline:  # and the run goes on
        time.sleep(0.01)

mode = sys.argv[1]
with interrupts.insistent() as ctrl_c:
    print("READY", flush=True)
    started = time.time()
    try:
        library_call(15 if mode == "swallowed" else 0)
        print("finished", flush=True)
    except KeyboardInterrupt:
        ctrl_c.taken()
        print("interrupted after %.1f s" % (time.time() - started), flush=True)
        time.sleep(1.5)  # clean-up: no further interrupt arrives here
        print("cleaned up", flush=True)
print("handler restored", signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)
"""


def _child(mode):
    process = subprocess.Popen([sys.executable, "-c", CHILD, mode], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout.readline().strip() == "READY"
    return process


def test_ctrl_c_swallowed_by_a_library_is_raised_again_until_the_run_takes_it():
    process = _child("swallowed")
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    lines = out.splitlines()
    assert lines[0] == "swallowed"  # the first one was lost inside the library, as in the run it stopped
    assert lines[1].startswith("interrupted after ") and float(lines[1].split()[2]) < 5
    assert lines[2:] == ["cleaned up", "handler restored True"]  # nothing raised during the clean-up
    assert process.returncode == 0


def test_without_ctrl_c_nothing_is_raised_and_the_handler_is_restored():
    process = _child("quiet")
    out, _ = process.communicate(timeout=30)
    assert out.splitlines() == ["finished", "handler restored True"] and process.returncode == 0
