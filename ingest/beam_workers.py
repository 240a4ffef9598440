"""A multi-process ingest whose Beam worker process dies ends in one line, not a wait without end.

Beam's DirectRunner starts each worker process from a thread ("run_worker") that raises when the process exits
with a non-zero status, and nothing passes that on: a worker that dies before it has connected (the out-of-memory
killer, an import that fails) leaves the runner waiting for it for good, and one that dies later ends the run in
Beam's tracebacks. Here that thread's error is taken, and the main thread, waiting on a lock, is woken by a signal
whose handler raises WorkerLost; the caller's cleanup then runs as for any failed ingest.

The signal goes to the main thread itself, and again until its handler has run: sent to the process, the kernel may
give it to any thread that does not hold it back, and the main thread, blocked on a lock, never wakes (3 of 20 runs
on two busy cores waited for good); one that landed just before the main thread blocked would be noted by Python
without its handler running until the next.

A Ctrl-C goes to the terminal's whole process group: each worker, stopped by it, printed its traceback beside
the command's one line, and Beam's threads logged the connections it left. A scheduler's SIGTERM goes to this
process alone: the main thread is woken to take it (the workers, which it never reached, would keep the main
thread waiting for good), and the workers are ended as after a Ctrl-C. A worker stopped by a Ctrl-C this
process took too is not lost (the Ctrl-C says it all), and what the workers print once the run is stopped is
dropped (_quiet_once_stopped).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from typing import Callable, Sequence

import psutil

from config.beam_policy import MULTI_PROCESS
from contract.errors import RunFailedError

_WORKER_THREAD = "run_worker"  # apache_beam.runners.portability.fn_api_runner.worker_handlers names it so
# Beam's threads that serve one worker's connections (worker_handlers' control reader, data_plane's reader): they
# fail and log as the worker goes
_CONNECTION_THREADS = (_WORKER_THREAD, "beam_control_read", "read_grpc_client_inputs")
_WORKER_EXITED = "Worker subprocess exited with return code"
_WAKE = signal.SIGUSR1
_WORKER_MODULE = "apache_beam.runners.worker.sdk_worker_main"
# Beam's call that stops the workers at a run's end: a worker lost there had done its work (the run goes on to
# commit), and Beam catches and logs any error raised inside it
_CLOSING = "close_all"


_STOPS = (signal.SIGINT, signal.SIGTERM)  # what a terminal's Ctrl-C, a scheduler's stop send the process group
_HOLD = 0.2  # seconds the workers' output waits before it is passed on: a stop's output comes after the stop


class WorkerLost(RunFailedError):
    """A Beam worker process of the ingest ended before the work did: exit 1, in one line."""


def _kill_workers(stop: bool = False) -> None:
    """Kills this process's other Beam worker processes: Beam waits for each to end before it lets a run fail, and
    a live one, its peer lost, would wait for work that never comes. `stop`: with SIGTERM, as a stop of this
    process's (a worker ended by a stop is not lost)."""
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # one gone meanwhile
            if _WORKER_MODULE in " ".join(process.cmdline()):
                process.terminate() if stop else process.kill()


def _stopped_by_a_stop(code: int) -> bool:
    return -code in _STOPS or code - 128 in _STOPS  # -N: killed by signal N; 128 + N: through the shell


@contextlib.contextmanager
def _quiet_once_stopped(interrupted: threading.Event, stopped: Callable[[], bool],
                        nudge: Callable[[], None] = lambda: None):
    """Meanwhile this process's stderr, which the workers inherit as they start, is a pipe whose output is passed on
    _HOLD seconds late, and dropped once `stopped()`; `interrupted` is set as this process takes a Ctrl-C or a SIGTERM
    (a byte on Python's signal wake-up file, where no one else has it: an event loop's), and `nudge` called then."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr (closed by the caller): nothing to keep quiet
        yield
        return
    reader, writer = os.pipe()
    signals, wake_end = socket.socketpair()
    wake_end.setblocking(False)
    another = signal.set_wakeup_fd(wake_end.fileno(), warn_on_full_buffer=False)
    if another != -1:
        signal.set_wakeup_fd(another)
    closing, restored = threading.Event(), threading.Event()
    passing = threading.Thread(target=_pass_on, name="ingest-stderr", daemon=True,
                               args=(reader, signals, saved, interrupted, stopped, closing, restored, nudge))
    passing.start()
    _flush(sys.stderr)
    os.dup2(writer, 2)
    os.close(writer)
    try:
        yield
    except KeyboardInterrupt:  # stopped, whether or not the thread has read the Ctrl-C's byte yet
        interrupted.set()
        raise
    finally:
        try:
            if stopped():
                _end_workers()
        finally:  # whatever cut that short (a second Ctrl-C): stderr is this process's own again
            _flush(sys.stderr)
            closing.set()  # what is held is passed on now, before what is written to stderr itself from here
            os.dup2(saved, 2)
            restored.set()
            if another == -1:
                signal.set_wakeup_fd(-1)
            passing.join(5)
            if not passing.is_alive():  # else its files are left open rather than closed under it
                for end in (reader, saved):
                    os.close(end)
            signals.close()
            wake_end.close()


def _flush(stream) -> None:
    if stream is not None:
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def _pass_on(reader: int, signals: socket.socket, to: int, interrupted: threading.Event, stopped, closing,
             restored, nudge):
    """Passes the pipe's output on (closing: at once); ends once stderr is restored and the pipe has nothing left."""
    chooser = selectors.DefaultSelector()
    try:
        _pass_on_held(chooser, reader, signals, to, interrupted, stopped, closing, restored, nudge)
    except Exception:  # never leave the pipe undrained: every writer to stderr would wait on it
        while (chunk := os.read(reader, 1 << 16)) and not restored.is_set():
            with contextlib.suppress(OSError):
                os.write(to, chunk)
    finally:
        chooser.close()


def _pass_on_held(chooser, reader, signals, to, interrupted, stopped, closing, restored, nudge) -> None:
    held: collections.deque = collections.deque()
    chooser.register(reader, selectors.EVENT_READ)
    chooser.register(signals, selectors.EVENT_READ)
    open_ = True
    while True:
        for key, _ in chooser.select(0.05):
            if key.fileobj is signals:
                said = signals.recv(64)  # a byte for each signal that has a Python handler
                if any(stop in said for stop in _STOPS):
                    interrupted.set()
                    nudge()
                continue
            chunk = os.read(reader, 1 << 16)
            if chunk:
                held.append((time.monotonic(), chunk))
            else:
                chooser.unregister(reader)
                open_ = False
        ending = closing.is_set()
        while held and (ending or time.monotonic() - held[0][0] >= _HOLD):
            chunk = held.popleft()[1]
            if not stopped():
                with contextlib.suppress(OSError):
                    os.write(to, chunk)
        if restored.is_set() and not held and (not open_ or not chooser.select(0)):
            return


def _wake_until(woken: threading.Event, sent: threading.Event, guard: threading.Lock, finished) -> None:
    """Sends the signal to the main thread until its handler has run or the watched block has ended (checked under
    the guard the block's end takes before it puts the previous handler back)."""
    main = threading.main_thread().ident
    while not woken.is_set():
        with guard:
            if finished():
                return
            signal.pthread_kill(main, _WAKE)
            sent.set()
        woken.wait(0.5)


def _end_workers(seconds: float = 5) -> None:
    """Kills the workers left and waits for Beam's threads that served them: Beam's closing after a Ctrl-C need not
    wait for those, and what they raise and log afterwards would reach the terminal."""
    _kill_workers()
    deadline = time.monotonic() + seconds
    for thread in threading.enumerate():
        if thread.name in _CONNECTION_THREADS and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))


def _not_to_interrupt(frame) -> bool:
    """Whether the main thread is in Beam's closing (the work was done) or in watched's own code (its end puts the
    hook and the handler back: an error raised there would leave them in place)."""
    while frame is not None:
        if frame.f_code.co_name == _CLOSING or frame.f_code is watched.__wrapped__.__code__:
            return True
        frame = frame.f_back
    return False


def _line(code: int) -> str:
    # Beam starts the worker through a shell: a killed worker is -N when the shell had handed its process over to
    # it, 128 + N when the shell waited for it
    how = f"killed by signal {-code}" if code < 0 else f"killed by signal {code - 128}" if code > 128 \
        else f"exit status {code}"
    return (f"a Beam worker process of the ingest ended before the work did ({how}; the out-of-memory killer sends "
            "signal 9); nothing was ingested (its staging folder is removed, the spans before it are as they "
            "were); --beam-workers 1 runs in one process")


@contextlib.contextmanager
def watched(beam_args: Sequence[str]):
    """Raises WorkerLost in the block's thread when a worker process of a multi-process DirectRunner exits with
    an error. Only for multi-process runs, from the main thread (a signal's handler runs there): else nothing."""
    if MULTI_PROCESS not in beam_args or threading.current_thread() is not threading.main_thread():
        yield
        return
    lost: list[int] = []
    deferred: list[tuple] = []
    guard = threading.Lock()
    done = False
    woken, sent, interrupted = threading.Event(), threading.Event(), threading.Event()
    previous_hook = threading.excepthook

    def hook(args):
        said = str(args.exc_value)
        if args.thread is not None and args.thread.name == _WORKER_THREAD and said.startswith(_WORKER_EXITED):
            code = int(said[len(_WORKER_EXITED):].strip() or 0)
            if _stopped_by_a_stop(code) and interrupted.wait(1):  # the same Ctrl-C as this process's
                return
            with guard:
                if done or lost:
                    return
                lost.append(code)
                _kill_workers()
            _wake_until(woken, sent, guard, lambda: done)
            return
        if args.thread is not threading.main_thread():
            # Beam's threads fail on a lost worker's channels, sometimes before its starting thread says it is lost:
            # said at the block's end unless a worker was lost (then the one line says it all)
            deferred.append((args.exc_type, args.exc_value, args.exc_traceback, args.thread))
            return
        previous_hook(args)

    def wake(signum, frame):
        woken.set()
        if lost and not done and not _not_to_interrupt(frame):
            raise WorkerLost(_line(lost[0]))

    def nudge():
        """A stop sent to this process alone (a scheduler's SIGTERM) reaches no worker, and Beam's closing waits for
        each worker to end: the workers are stopped as the process group's would be. And the main thread is woken to
        run the stop's handler: the signal may have reached another thread, and the main thread, waiting on a lock
        for the workers, would never run it."""
        _kill_workers(stop=True)
        with guard:
            if not done:
                signal.pthread_kill(threading.main_thread().ident, _WAKE)
                sent.set()

    # Beam's threads log their errors on a lost worker's channels (with tracebacks), sometimes before the worker's
    # starting thread says it is lost; any error of the run itself reaches the caller as an exception
    beam_logs = logging.getLogger("apache_beam")
    previous_level = beam_logs.level
    beam_logs.setLevel(logging.CRITICAL)
    previous_handler = signal.signal(_WAKE, wake)
    threading.excepthook = hook
    try:
        with _quiet_once_stopped(interrupted, lambda: interrupted.is_set() or bool(lost), nudge):
            yield
    except WorkerLost:
        raise
    except Exception:
        if lost:  # Beam's own error for the channel the dead worker left ("Channel closed prematurely")
            raise WorkerLost(_line(lost[0])) from None
        raise
    finally:
        with guard:  # no signal sent after this, once the handler before is back
            done = True
        threading.excepthook = previous_hook
        if sent.is_set() and not woken.is_set():
            # a signal sent and not yet taken would, once the handler before is back (SIGUSR1's default ends the
            # process), end the process
            woken.wait(1)
        signal.signal(_WAKE, previous_handler)
        beam_logs.setLevel(previous_level)
        for error in deferred if not lost and not interrupted.is_set() else ():
            previous_hook(threading.ExceptHookArgs(error))
