"""Ctrl-C during TensorFlow work, kept where Python would lose it.

TensorFlow's objects are finalized whenever the garbage collector runs, and a
KeyboardInterrupt raised inside a finalizer is printed ("Exception ignored in
...") and dropped: the command would go on as if never interrupted (a search
on to the Trainer and the Pusher, a rollback on to its push).
"""

from __future__ import annotations

import functools
import signal
import threading

_HOLDING: list["Interrupts"] = []  # the Interrupts whose handler SIGINT has now, outermost first


class Interrupts:
    """While entered (in the main thread, with Python's own SIGINT handler in place), SIGINT is recorded as well as
    raised, and `check` raises it again at a safe point (a search: each training batch of a trial, each trial's
    start and end, the search's end; the Trainer: each batch and its end; a local run: before the push; rollback's
    TF Serving check: its end). Entered inside another (the Trainer's inside a local run's), it checks the outer
    one's record, which SIGINT goes to."""

    def __init__(self):
        self.interrupted = False
        self._previous = None
        self._outer: Interrupts | None = None

    def __enter__(self) -> "Interrupts":
        self.interrupted = False
        if threading.current_thread() is threading.main_thread():
            handler = signal.getsignal(signal.SIGINT)
            if handler is signal.default_int_handler:  # not where Ctrl-C is ignored
                self._previous = signal.signal(signal.SIGINT, self._received)
                _HOLDING.append(self)
            elif _HOLDING and handler == _HOLDING[-1]._received:
                self._outer = _HOLDING[-1]
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
            _HOLDING.remove(self)
        # After it, `interrupted` says whether a Ctrl-C came while it was entered, to it or to the one outside it
        self.interrupted = self.interrupted or (self._outer is not None and self._outer.interrupted)
        self._outer = None

    def _received(self, signum, frame):
        self.interrupted = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.interrupted or (self._outer is not None and self._outer.interrupted):
            raise KeyboardInterrupt


class Deferred:
    """While entered (in the main thread), SIGINT (where Python's own handler has it) and SIGTERM (where
    TermAsCtrlC has it) are recorded, not raised: for a short step that must end whole once it has begun, such as a
    run's summary and report after the pipeline stopped. A second Ctrl-C a moment after the first (a person
    pressing it again), or a scheduler's SIGTERM, would otherwise stop that step half done: the root without its
    summary.

    Both are also blocked in this thread meanwhile, so neither cuts short what C code there is waiting for (each
    signal ends an SQLite busy-wait early: a few Ctrl-Cs while another program held the store locked made ML
    Metadata give up). The handler only records (a handler that printed could cut a write to the terminal that it
    interrupted); `received` says whether one came, for the caller to say after the step."""

    def __init__(self):
        self.received = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "Deferred":
        self.received = False
        if threading.current_thread() is threading.main_thread():
            taken = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: TermAsCtrlC._received}
            for signum, handler in taken.items():
                if signal.getsignal(signum) == handler:
                    self._previous[signum] = signal.signal(signum, self._received)
            if self._previous:
                signal.pthread_sigmask(signal.SIG_BLOCK, set(self._previous))
        return self

    def __exit__(self, *exc_info) -> None:
        if not self._previous:
            return
        # One still pending for this thread is delivered as it is unblocked, to _received; the interpreter runs a
        # received signal's handler at its next call, as here. One that came later still is a signal after the step.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(self._previous))
        _handlers_run()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _received(self, signum, frame):
        self.received = True


def _handlers_run() -> None:
    """A Python call: CPython runs the handlers of the signals it has received when a call begins."""


class TermAsCtrlC:
    """While entered (in the main thread, SIGTERM handled by default), SIGTERM stops the command as a Ctrl-C does:
    a scheduler's stop (`timeout`, systemd, a container's stop) then leaves what a Ctrl-C leaves (the running
    component CANCELED, the summary written, the root's lock released) rather than a killed process. It is handed
    to whatever handles SIGINT now (Interrupts records it, Deferred holds it), or raised as KeyboardInterrupt where
    SIGINT is ignored (a background job's)."""

    def __init__(self):
        self._previous = None

    def __enter__(self) -> "TermAsCtrlC":
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._previous = signal.signal(signal.SIGTERM, self._received)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    @staticmethod
    def _received(signum, frame):
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt


def check_held() -> None:
    """Raises a Ctrl-C that any Interrupts entered now recorded (a finalizer may have swallowed it): for code that
    runs inside one it was not given, such as a pipeline node inside a local run."""
    for holder in _HOLDING:
        holder.check()


def from_ctrl_c(error: BaseException) -> bool:
    """Whether `error` is a Ctrl-C or came of one. A KeyboardInterrupt raised while C code has called back into
    Python (an import made by TensorFlow's C++ as it walks a tf.data structure) reaches Python as a SystemError,
    "... returned a result with an exception set", caused by the KeyboardInterrupt."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def ctrl_c_kept(function):
    """`function` with a Ctrl-C that C code turned into another error raised as the KeyboardInterrupt it was: TFX's
    launcher records an executor's Exception as the node's failure (its traceback logged), a KeyboardInterrupt
    reaches the run, which says it was interrupted and marks the node CANCELED. The error need not name the Ctrl-C:
    C code that calls back into Python may print the KeyboardInterrupt, drop it and fail with an error of its own.
    So SIGINT is recorded while `function` runs (Interrupts), and an error after one was received is the Ctrl-C."""
    @functools.wraps(function)
    def kept(*args, **kwargs):
        with Interrupts() as held:
            try:
                return function(*args, **kwargs)
            except Exception as error:
                if from_ctrl_c(error):
                    raise KeyboardInterrupt from None
                held.check()  # raises it, the error kept as its context for a debugger
                raise

    return kept
