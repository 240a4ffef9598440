"""Ctrl-C during TensorFlow work, kept where Python would lose it.

TensorFlow's objects are finalized whenever the garbage collector runs, and a
KeyboardInterrupt raised inside a finalizer is printed ("Exception ignored in
...") and dropped: the command would go on as if never interrupted (a search
on to the Trainer and the Pusher, a rollback on to its push).
"""

from __future__ import annotations

import signal
import threading


class Interrupts:
    """While entered (in the main thread, with Python's own SIGINT handler in place), SIGINT is recorded as well as
    raised, and `check` raises it again at a safe point (a search: each training batch of a trial, each trial's
    start and end, the search's end; rollback's TF Serving check: its end)."""

    def __init__(self):
        self.interrupted = False
        self._previous = None

    def __enter__(self) -> "Interrupts":
        self.interrupted = False
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored
            self._previous = signal.signal(signal.SIGINT, self._received)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _received(self, signum, frame):
        self.interrupted = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
