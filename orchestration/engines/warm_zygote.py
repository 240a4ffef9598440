"""The zygote of warm task processes (orchestration.engines.warm_tasks starts it, with the lock of its folder's
IMPORTING file, the socket's path and the modules to import): imports them, listens, and forks a process for each
task its clients (warm_client.py) hand it, until its stdin closes and its tasks have ended."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from typing import NoReturn

from contract import errors
from orchestration.engines.warm_tasks import EXECUTOR, IMPORTING

# What the shell of a task's command changes: the only variables allowed to differ from the zygote's; the fork takes
# the task's values of them. The command's own `_KFP_RUNTIME=true` is the zygote's from its start: kfp reads it as it
# loads (a task's kfp has no compiler, client or DSL).
SHELL_VARIABLES = frozenset({"PWD", "OLDPWD", "SHLVL", "_"})
TASK_VARIABLES = {"_KFP_RUNTIME": "true"}
SOCKET_PATH_BYTES = 108  # sun_path's size on Linux, its NUL included: no client connects to a longer path
# Signals the client passes on, blocked in the zygote around each fork until the task's handlers are in place; the
# terminal's (Ctrl-C, Ctrl-\\, a hang-up) go to the task's process group, its children too, as they would.
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def serve(path: str, importing: int, preload: list[str]) -> None:
    """The zygote: imports `preload`, then forks a task for each client until its stdin closes and its tasks
    have ended. Holds the lock of IMPORTING (its descriptor `importing`) until it listens or gives up. Prints what
    it served at the end (Zygote.stop reads it)."""
    os.environ.update(TASK_VARIABLES)  # before anything imports kfp
    baseline = _comparable(os.environ)  # the environment as a fresh process would start with it
    home = os.getcwd()
    try:
        listener = _import_and_listen(path, preload)
    finally:
        # After the socket is in place (a client that finds no file finds the socket) and before the lock is let go:
        # a process an import forked holds it too, as long as it lives, and no client must wait for that one.
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(os.path.dirname(path), IMPORTING))
        if importing >= 0:
            os.close(importing)
    if listener is None:
        return
    wake_read, wake_write = os.pipe()
    for fd in (wake_read, wake_write):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd hears it
    served = _Served(listener, wake_read, wake_write, baseline, home)
    served.loop()
    print(served.summary(), flush=True)


def _import_and_listen(path: str, preload: list[str]) -> socket.socket | None:
    """The listening socket at `path` once `preload` is imported; None (and the reason printed) when not."""
    import importlib

    from contract import startup

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the tasks' and the run's
    if len(os.fsencode(path)) >= SOCKET_PATH_BYTES:  # bound under a shorter name, it would be renamed out of reach
        return _serves_none(f"cannot listen at {path}: AF_UNIX path too long")
    # kfp's executor sets up a task's logging only where the root logger has no handler yet
    with startup.loading_libraries(), startup.root_logger_kept():
        for name in preload:
            try:
                importlib.import_module(name)
            except BaseException as error:  # noqa: BLE001 - an import's SystemExit too: the tasks that need it
                # fail on their own, each with its traceback in its own log; this process serves none of them
                return _serves_none(f"importing {name} failed: {errors.first_line(error, with_type=True)}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # bound under a name no longer than the socket's (a path that fits fits both), then renamed: clients see the
        # socket only once it accepts
        temporary = os.path.join(os.path.dirname(path), "n")
        listener.bind(temporary)
        listener.listen(16)
        os.rename(temporary, path)
    except OSError as error:  # a file system without sockets
        listener.close()
        return _serves_none(f"cannot listen at {path}: {error.strerror or error}")
    return listener


def _serves_none(reason: str) -> None:
    """The zygote's one line when it will serve no task (Zygote.stop reads it into the run log)."""
    print(f"kfp.local tasks: every one in a fresh process (no warm process: {reason})", flush=True)


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
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
