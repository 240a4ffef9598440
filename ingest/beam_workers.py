"""A multi-process ingest whose Beam worker process dies ends in one line, not a wait without end.

Beam's DirectRunner starts each worker process from a thread ("run_worker") that raises when the process exits
with a non-zero status, and nothing passes that on: a worker that dies before it has connected (the out-of-memory
killer, an import that fails) leaves the runner waiting for it for good, and one that dies later ends the run in
Beam's tracebacks. Here that thread's error is taken, and the main thread, waiting on a lock, is woken by a signal
whose handler raises WorkerLost; the caller's cleanup then runs as for any failed ingest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Sequence

from contract.errors import RunFailedError

MULTI_PROCESS = "--direct_running_mode=multi_processing"
_WORKER_THREAD = "run_worker"  # apache_beam.runners.portability.fn_api_runner.worker_handlers names it so
_WORKER_EXITED = "Worker subprocess exited with return code"
_WAKE = signal.SIGUSR1


class WorkerLost(RunFailedError):
    """A Beam worker process of the ingest ended before the work did: exit 1, in one line."""


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
    guard = threading.Lock()
    done = False
    previous_hook = threading.excepthook

    def hook(args):
        said = str(args.exc_value)
        if args.thread is not None and args.thread.name == _WORKER_THREAD and said.startswith(_WORKER_EXITED):
            with guard:
                if not done and not lost:
                    lost.append(int(said[len(_WORKER_EXITED):].strip() or 0))
                    os.kill(os.getpid(), _WAKE)
            return
        previous_hook(args)

    def wake(signum, frame):
        if lost:
            raise WorkerLost(_line(lost[0]))

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
        with guard:
            done = True
        threading.excepthook = previous_hook
        signal.signal(_WAKE, previous_handler)
