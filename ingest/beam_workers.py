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
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Sequence

import psutil

from config.beam_policy import MULTI_PROCESS
from contract.errors import RunFailedError

_WORKER_THREAD = "run_worker"  # apache_beam.runners.portability.fn_api_runner.worker_handlers names it so
_WORKER_EXITED = "Worker subprocess exited with return code"
_WAKE = signal.SIGUSR1
_WORKER_MODULE = "apache_beam.runners.worker.sdk_worker_main"
# Beam's call that stops the workers at a run's end: a worker lost there had done its work (the run goes on to
# commit), and Beam catches and logs any error raised inside it
_CLOSING = "close_all"


class WorkerLost(RunFailedError):
    """A Beam worker process of the ingest ended before the work did: exit 1, in one line."""


def _kill_workers() -> None:
    """Kills this process's other Beam worker processes: Beam waits for each to end before it lets a run fail, and
    a live one, its peer lost, would wait for work that never comes."""
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # one gone meanwhile
            if _WORKER_MODULE in " ".join(process.cmdline()):
                process.kill()


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
    woken, sent = threading.Event(), threading.Event()
    previous_hook = threading.excepthook

    def hook(args):
        said = str(args.exc_value)
        if args.thread is not None and args.thread.name == _WORKER_THREAD and said.startswith(_WORKER_EXITED):
            with guard:
                if done or lost:
                    return
                lost.append(int(said[len(_WORKER_EXITED):].strip() or 0))
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

    # Beam's threads log their errors on a lost worker's channels (with tracebacks), sometimes before the worker's
    # starting thread says it is lost; any error of the run itself reaches the caller as an exception
    beam_logs = logging.getLogger("apache_beam")
    previous_level = beam_logs.level
    beam_logs.setLevel(logging.CRITICAL)
    previous_handler = signal.signal(_WAKE, wake)
    threading.excepthook = hook
    try:
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
        for error in deferred if not lost else ():
            previous_hook(threading.ExceptHookArgs(error))
