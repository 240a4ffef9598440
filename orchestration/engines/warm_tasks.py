"""Warm task processes for kfp.local's rehearsal of a package: each task a fork of one process that has already
imported the libraries, instead of a new interpreter that imports them again.

A kfp.local task is `python3 -m kfp.dsl.executor_main ...` in a process of its own, and before its node runs it
spends seconds importing TensorFlow, TFX, Beam and kfp (about 4 s of CPU on an Intel Xeon, 7.5 s on an AMD EPYC
with AVX2: docs/performance.md), in every one of a run's tasks. Here one process (the zygote, started as the run
starts) imports them once, and each task's command starts a small client (warm_client.py, the standard library
only) that hands its arguments, working directory, environment and standard streams to the zygote; the zygote
forks, and the fork runs `kfp.dsl.executor_main` as `python -m` would and leaves through the interpreter's own
exit. The client passes on to it the signals a task's process gets (the terminal's Ctrl-C, Ctrl-Z and hang-up to
the fork's process group, a `kill` to the fork) and exits with its code or signal. The fork holds only what the
imports left: no task's work, no store, none of Python's threads (the native libraries' idle pools, as after any
fork, are the calling thread's alone).
What still tells it from a fresh process: `ps` shows the zygote's command line for it (the client's carries the
task's), its parent is the zygote, modules the task never imports are loaded (none runs anything), and the
variables those imports set in their own process's environment are set (TensorFlow Transform's
TF_USE_LEGACY_KERAS, joblib's KMP_* for Intel's OpenMP), as a node task's own imports set them.

Where the fork could differ from a fresh process, the task gets a fresh one (the client runs Python itself): the
zygote not ready yet (the run's first task, while the zygote imports beside it), a command other than kfp's
executor, another working directory, or an environment other than the zygote's (a variable a library reads as it
loads). `submit --local --fresh-task-processes` gives every task a fresh process, as a pod would.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from typing import NoReturn

from contract import errors

EXECUTOR = ["-m", "kfp.dsl.executor_main"]
# What a kfp task's own process imports before its function runs: kfp's executor (not executor_main itself, which
# the fork runs as __main__) and the module every component body imports (orchestration.engines.kfp_tasks); and
# what each task that runs a TFX node imports to run it: the pipeline's components with their executors (TFDV,
# TensorFlow Transform, TFMA, Beam's runner: about 2,900 modules more, 2.3-2.9 s of CPU on an AMD EPYC) and TFX's
# launcher; and the report task's figures (matplotlib). A fork that imported them itself would pay that for every
# node of every run.
PRELOAD = ("kfp.dsl.executor", "orchestration.engines.kfp_tasks", "pipeline.pipeline",
           "tfx.orchestration.portable.launcher", "reporting.run_report")
# What the shell of a task's command changes: the only variables allowed to differ from the zygote's; the fork takes
# the task's values of them. The command's own `_KFP_RUNTIME=true` is the zygote's from its start: kfp reads it as it
# loads (a task's kfp has no compiler, client or DSL).
SHELL_VARIABLES = frozenset({"PWD", "OLDPWD", "SHLVL", "_"})
TASK_VARIABLES = {"_KFP_RUNTIME": "true"}
# Signals the client passes on, blocked in the zygote around each fork until the task's handlers are in place; the
# terminal's (Ctrl-C, Ctrl-\\, a hang-up) go to the task's process group, its children too, as they would.
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "warm_client.py")
READY_SECONDS = 120  # wait_ready's default, for a caller that needs the zygote (a run never waits: tasks go fresh)
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
    """The process the tasks fork from, started at once (its imports run beside the run's first task)."""

    def __init__(self, preload: tuple[str, ...]):
        self.folder = tempfile.mkdtemp(prefix="kfp-warm-")  # a socket path must stay short (108 bytes)
        self.socket = os.path.join(self.folder, "zygote.sock")
        self.log = os.path.join(self.folder, "zygote.log")
        self.served: str | None = None
        self.command = [sys.executable, "-I", "-S", CLIENT, self.socket]  # the client, before the task's arguments
        self.launcher = shlex.join(self.command)  # the same in a shell line
        with open(self.log, "w") as log:
            # The environment inherited as it is (a library may have set variables behind os.environ's back:
            # the task's process inherits those too); the task's own variables set by the zygote as it starts.
            self.process = subprocess.Popen([sys.executable, "-m", __name__, self.socket, *preload],
                                            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)

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


def serve(path: str, preload: list[str]) -> None:
    """The zygote: imports `preload`, then forks a task for each client until its stdin closes and its tasks
    have ended. Prints what it served at the end (Zygote.stop reads it)."""
    import importlib

    from contract import startup

    os.environ.update(TASK_VARIABLES)  # before anything imports kfp
    baseline = _comparable(os.environ)  # the environment as a fresh process would start with it
    home = os.getcwd()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the tasks' and the run's
    # kfp's executor sets up a task's logging only where the root logger has no handler yet
    with startup.loading_libraries(), startup.root_logger_kept():
        for name in preload:
            try:
                importlib.import_module(name)
            except BaseException as error:  # noqa: BLE001 - an import's SystemExit too: the tasks that need it
                # fail on their own, each with its traceback in its own log; this process serves none of them
                print(f"kfp.local tasks: every one in a fresh process (no warm process: importing {name} failed: "
                      f"{errors.first_line(error, with_type=True)})", flush=True)
                return
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path + ".new")
        listener.listen(16)
        os.rename(path + ".new", path)  # clients see the socket only once it accepts
    except OSError as error:  # a folder too deep for a socket's path, a file system without them
        print(f"kfp.local tasks: every one in a fresh process (no warm process: cannot listen at {path}: "
              f"{error.strerror or error})", flush=True)
        return
    wake_read, wake_write = os.pipe()
    for fd in (wake_read, wake_write):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd hears it
    served = _Served(listener, wake_read, wake_write, baseline, home)
    served.loop()
    print(served.summary(), flush=True)


class _Served:
    def __init__(self, listener, wake_read: int, wake_write: int, baseline: dict, home: str):
        self.listener, self.wake_read, self.wake_write = listener, wake_read, wake_write
        self.baseline, self.home = baseline, home
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ)
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
        self.selector.register(wake_read, selectors.EVENT_READ)
        self.tasks: dict[int, socket.socket] = {}
        self.warm, self.fresh, self.stopping = 0, [], False
        self.pid = os.getpid()
        self.forwarded = {getattr(signal, name) for name in FORWARDED}

    def loop(self) -> None:
        while not (self.stopping and not self.tasks):
            for key, _ in self.selector.select():
                try:
                    self._ready(key)
                except Exception as error:  # noqa: BLE001 - the zygote serves on; a fork's own exit rises on
                    if os.getpid() != self.pid:
                        raise
                    self.fresh.append(f"the warm process's error: {type(error).__name__}: {error}")

    def _ready(self, key) -> None:
        if key.fileobj is self.listener:
            if not self.stopping:
                self._accept()
        elif key.fileobj == sys.stdin.fileno():
            if not os.read(key.fileobj, 4096):  # the run has ended: no new tasks
                self.selector.unregister(key.fileobj)
                self.selector.unregister(self.listener)
                self.listener.close()
                self.stopping = True
        elif key.fileobj == self.wake_read:
            with contextlib.suppress(BlockingIOError):
                os.read(self.wake_read, 4096)
            self._reap()
        else:  # a client's connection closed before its task ended: its process was killed
            self._client_gone(key.fileobj)

    def summary(self) -> str:
        fresh = f", {len(self.fresh)} in a fresh process ({'; '.join(sorted(set(self.fresh)))})" if self.fresh else ""
        return f"kfp.local tasks: {self.warm} started from the warm process{fresh}"

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        try:
            request, fds = _receive(conn)
        except (OSError, ValueError) as error:
            self.fresh.append(f"an unreadable request: {error}")
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"fresh": "an unreadable request"}).encode() + b"\n")
            conn.close()
            return
        reason = self._differs(request)
        if reason:
            for fd in fds:
                os.close(fd)
            self.fresh.append(reason)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"fresh": reason}).encode() + b"\n")
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = -1
        signal.pthread_sigmask(signal.SIG_BLOCK, self.forwarded)  # pending in the fork until it can take them
        try:
            pid = os.fork()
        except OSError as error:  # out of memory or processes: the task starts its own
            reason = f"the fork failed: {error.strerror or error}"
        if pid == 0:
            self._become_task(request, fds, conn)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.forwarded)
        for fd in fds:
            os.close(fd)
        if reason:
            self.fresh.append(reason)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"fresh": reason}).encode() + b"\n")
            conn.close()
            return
        self.warm += 1
        self.tasks[pid] = conn
        self.selector.register(conn, selectors.EVENT_READ)
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")

    def _differs(self, request: dict) -> str:
        if request.get("argv", [])[:2] != EXECUTOR:
            return "a command other than kfp's executor"
        if request.get("cwd") != self.home:
            return "another working directory"
        changed = sorted(set(self.baseline.items()) ^ set(_comparable(request.get("env", {})).items()))
        if changed:
            return "an environment that differs: " + ", ".join(sorted({name for name, _ in changed}))
        return ""

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.tasks.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(KeyError, ValueError):  # unregistered already when its client went
                    self.selector.unregister(conn)
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                conn.close()

    def _client_gone(self, conn) -> None:
        with contextlib.suppress(OSError):
            if conn.recv(1):
                return
        for pid, held in self.tasks.items():
            if held is conn:  # as if the task's own process had been killed
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.selector.unregister(conn)
                return

    def _become_task(self, request: dict, fds: list[int], conn) -> NoReturn:
        """In the fork: the task's streams, process group and shell variables, then kfp's executor as `python -m`
        runs it. It leaves as that process would, through the interpreter's own exit (SystemExit, or the task's
        exception, rises through the zygote's frames, none of which catch it): the task's threads are joined, its
        exit handlers run, its files flushed, its exit code or KeyboardInterrupt's SIGINT the process's."""
        try:
            signal.set_wakeup_fd(-1)
            for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
                signal.signal(number, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            # A group of its own (its children join it): a signal for the task reaches it once, through its client,
            # which is in the run's group where the terminal sends its signals.
            os.setpgid(0, 0)
            self.selector.close()
            self.listener.close()
            for held in [conn, *self.tasks.values()]:
                held.close()
            for fd in (self.wake_read, self.wake_write):
                os.close(fd)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                if fd > 2:
                    os.close(fd)
            _fresh_streams()
            env = request["env"]
            for name in SHELL_VARIABLES:
                if name in env:
                    os.environ[name] = env[name]
                else:
                    os.environ.pop(name, None)
            numpy = sys.modules.get("numpy")
            if numpy is not None:  # its global generator was seeded as the zygote imported it: every fork's alike
                numpy.random.seed()
            sys.argv = [request["argv"][1], *request["argv"][2:]]
            import runpy
        except BaseException:  # noqa: BLE001 - the fork must never go back into the zygote's loop
            traceback.print_exc()
            os._exit(errors.FAILED)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.forwarded)  # what came since the fork is delivered now
        runpy.run_module(EXECUTOR[1], run_name="__main__", alter_sys=True)
        raise SystemExit(errors.OK)  # as `python -m` ends when the module returns


def _fresh_streams() -> None:
    """sys.stdin, stdout and stderr over the task's descriptors, as a new process would open them (the zygote's
    were opened over its own: a log file's position, seekability and buffer)."""
    import io

    for name, fd, mode in (("stdin", 0, "rb"), ("stdout", 1, "wb"), ("stderr", 2, "wb")):
        old = getattr(sys, name)
        unbuffered = isinstance(old.buffer, io.FileIO)
        binary = io.open(fd, mode, buffering=0 if unbuffered else -1, closefd=False)
        (binary if unbuffered else binary.raw).name = f"<{name}>"
        stream = io.TextIOWrapper(binary, encoding=old.encoding, errors=old.errors, newline="\n",
                                  line_buffering=fd == 2 or os.isatty(fd), write_through=old.write_through)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _comparable(env) -> dict:
    return {name: value for name, value in env.items() if name not in SHELL_VARIABLES}


def _receive(conn) -> tuple[dict, list[int]]:
    """A client's request: 8 bytes of length, then JSON; its standard streams come as file descriptors."""
    conn.settimeout(10)
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    try:
        while len(data) < 8 or len(data) < 8 + int.from_bytes(data[:8], "big"):
            more = conn.recv(1 << 16)
            if not more:
                raise ValueError("the request ended early")
            data += more
        conn.settimeout(None)
        if len(fds) != 3:
            raise ValueError(f"{len(fds)} streams instead of 3")
        return json.loads(data[8:8 + int.from_bytes(data[:8], "big")]), list(fds)
    except BaseException:  # the zygote must hold no task's streams: a pipe's reader would wait for it
        for fd in fds:
            os.close(fd)
        raise


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2:])
