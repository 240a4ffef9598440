"""Warm task processes for kfp.local's rehearsal of a package: each task a fork of one process that has already
imported the libraries, instead of a new interpreter that imports them again.

A kfp.local task is `python3 -m kfp.dsl.executor_main ...` in a process of its own, and before its node runs it
spends seconds importing TensorFlow, TFX, Beam and kfp (about 4 s of CPU on an Intel Xeon, 7.5 s on an AMD EPYC with
AVX2: docs/performance.md), in every one of a run's tasks. Here one process (the zygote, started as the run starts;
warm_zygote.py) imports them once, and each task's command starts a small client (warm_client.py, the standard
library only) that hands its arguments, working directory, environment and standard streams to the zygote; the
zygote forks, and the fork runs `kfp.dsl.executor_main` as `python -m` would and leaves through the interpreter's
own exit. The client passes on to it the signals a task's process gets (the terminal's Ctrl-C, Ctrl-Z and hang-up to
the fork's process group, a `kill` to the fork) and exits with its code or signal. The fork holds only what the
imports left: no task's work, no store, none of Python's threads (the native libraries' idle pools, as after any
fork, are the calling thread's alone).
What still tells it from a fresh process: `ps` shows the zygote's command line for it (the client's carries the
task's), its parent is the zygote, modules the task never imports are loaded (none runs anything), and the
variables those imports set in their own process's environment are set (TensorFlow Transform's
TF_USE_LEGACY_KERAS, joblib's KMP_* for Intel's OpenMP), as a node task's own imports set them.

A task that comes while the zygote is still importing (the run's first) waits for it rather than importing the
same libraries again beside it: on a machine of few cores the two imports take turns, and the fork saves the task's
seconds of CPU. Where the fork could differ from a fresh process, the task gets a fresh one (the client runs Python
itself): a command other than kfp's executor, another working directory, or an environment other than the
zygote's (a variable a library reads as it loads); so does one whose zygote failed to import, left, or took
longer than the client waits. `submit --local --fresh-task-processes` gives every task a fresh process, as a pod
would.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

EXECUTOR = ["-m", "kfp.dsl.executor_main"]
# What a kfp task's own process imports before its function runs: kfp's executor (not executor_main itself, which
# the fork runs as __main__) and the module every component body imports (orchestration.engines.kfp_tasks); and
# what each task that runs a TFX node imports to run it: the pipeline's components with their executors (TFDV,
# TensorFlow Transform, TFMA, Beam's runner: about 2,900 modules more, 2.3-2.9 s of CPU on an AMD EPYC) and TFX's
# launcher; and the report task's figures (matplotlib). A fork that imported them itself would pay that for every
# node of every run.
PRELOAD = ("kfp.dsl.executor", "orchestration.engines.kfp_tasks", "pipeline.pipeline",
           "tfx.orchestration.portable.launcher", "reporting.run_report")
ZYGOTE = "orchestration.engines.warm_zygote"  # the zygote's module, run as `python -m`
CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "warm_client.py")
READY_SECONDS = 120  # wait_ready's default, as long as a task's client waits for a zygote still importing
# The file in the zygote's folder it holds a lock on from its start until it listens or gives up: a client that finds
# no socket and the lock held waits (the lock goes with the process: a killed zygote holds none).
IMPORTING = "importing"
STOP_SECONDS = 30


@contextlib.contextmanager
def task_processes(warm: bool = True, preload: tuple[str, ...] = PRELOAD) -> Iterator[Zygote | None]:
    """Around a kfp.local run: its tasks start from a zygote (None when `warm` is off). kfp.local's command for a
    task runs `python3 -m kfp.dsl.executor_main` (`python3` replaced with this Python, in the component's source
    too); here that one invocation runs the client instead, which falls back to this Python itself. On leaving,
    the zygote stops (once its running tasks have ended, unless leaving on an error)."""
    if not warm:
        yield None
        return
    from kfp.local import subprocess_task_handler

    zygote = Zygote(preload)
    plain = subprocess_task_handler.run_local_subprocess
    executor = f"{sys.executable} {' '.join(EXECUTOR)}"

    def run_local_subprocess(full_command: list[str]) -> int:
        return plain([part.replace(executor, f"{zygote.launcher} {' '.join(EXECUTOR)}") for part in full_command])

    subprocess_task_handler.run_local_subprocess = run_local_subprocess
    try:
        yield zygote
    except BaseException:
        zygote.stop(wait=False)
        raise
    finally:
        subprocess_task_handler.run_local_subprocess = plain
    zygote.stop()


class Zygote:
    """The process the tasks fork from, started at once; a task that comes while it imports waits for it."""

    def __init__(self, preload: tuple[str, ...]):
        self.folder = tempfile.mkdtemp(prefix="kfp-warm-")  # a socket path must stay short (108 bytes)
        self.socket = os.path.join(self.folder, "zygote.sock")
        self.log = os.path.join(self.folder, "zygote.log")
        self.served: str | None = None
        self.command = [sys.executable, "-I", "-S", CLIENT, self.socket]  # the client, before the task's arguments
        self.launcher = shlex.join(self.command)  # the same in a shell line
        importing = -1
        try:
            importing = _importing_lock(os.path.join(self.folder, IMPORTING))
            with open(self.log, "w") as log:
                # The environment inherited as it is (a library may have set variables behind os.environ's back:
                # the task's process inherits those too); the task's own variables set by the zygote as it starts.
                self.process = subprocess.Popen(
                    [sys.executable, "-m", ZYGOTE, self.socket, str(importing), *preload],
                    pass_fds=[importing] if importing >= 0 else [], stdin=subprocess.PIPE, stdout=log,
                    stderr=subprocess.STDOUT)
        except BaseException:  # the folder holds at most these two; removed without a descriptor (EMFILE, say)
            for name in (IMPORTING, os.path.basename(self.log)):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.folder, name))
            with contextlib.suppress(OSError):
                os.rmdir(self.folder)
            raise
        finally:
            if importing >= 0:
                os.close(importing)

    def wait_ready(self, seconds: float = READY_SECONDS) -> bool:
        deadline = time.monotonic() + seconds
        while not os.path.exists(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, wait: bool = True) -> str:
        """Stops the zygote (its stdin closed; it leaves once its running tasks end); what it served, one line.
        `wait`: for it to leave (a run leaving on an error or a Ctrl-C does not wait for a task that ignores it)."""
        if self.served is not None:
            return self.served
        killed = not os.path.exists(self.socket) and self.process.poll() is None
        if killed:  # still importing (it reads its stdin only after): no task can be its
            self.process.kill()
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=STOP_SECONDS if wait else 0.5)
        except subprocess.TimeoutExpired:
            if wait:
                self.process.kill()
                self.process.wait()
        try:
            with open(self.log, errors="backslashreplace") as f:
                self.served = f.read()
        except OSError as error:
            self.served = f"kfp.local tasks: the warm process's record is gone ({error.strerror}: {self.log})\n"
        if "kfp.local tasks: " not in self.served:  # no line of its own: it never served, or it is serving still
            code = self.process.returncode
            self.served += "kfp.local tasks: " + (
                "every one in a fresh process (the warm process was still importing)" if killed else
                "the warm process was still running its tasks when the run stopped" if code is None else
                f"every one in a fresh process (the warm process left with code {code} before serving)") + "\n"
        shutil.rmtree(self.folder, ignore_errors=True)
        return self.served


def _importing_lock(path: str) -> int:
    """The file descriptor of IMPORTING, locked here and handed to the zygote, so that the lock is held from before
    the run's first task can come; -1 (no file: tasks that come early run fresh) where the file system has no locks.
    Above the standard streams: the zygote's stdin is a pipe set up over descriptor 0, whatever this one's is."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    if fd < 3:
        fd, low = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3), fd
        os.close(low)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:  # no locks on this file system (an NFS without its lock daemon, ENOLCK)
        os.close(fd)
        os.unlink(path)
        return -1
    return fd
