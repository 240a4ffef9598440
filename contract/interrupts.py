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

_RECEIVED = [0]  # Ctrl-Cs raised in this process (SIGINT, and SIGTERM taken as one): a guard compares counts
_TERMS = [0]  # SIGTERMs taken as a Ctrl-C in this process: what stopped a command, said as such


def terms() -> int:
    """How many SIGTERMs TermAsCtrlC has taken in this process: compared before and after a step, what stopped it."""
    return _TERMS[0]


def cause(terms_before: int) -> str:
    """What an interrupt since `terms_before` (terms() then) was, as a run's summary says it."""
    return "SIGTERM" if _TERMS[0] > terms_before else "Ctrl-C"


class Interrupts:
    """While entered (in the main thread, with Python's own SIGINT handler in place), SIGINT is recorded as well as
    raised, and `check` raises it again at a safe point (a search: each training batch of a trial, each trial's
    start and end, the search's end; the Trainer: each batch and its end; a local run: before the push; rollback's
    TF Serving check: its end). Entered inside another (the Trainer's inside a local run's), it checks the outer
    one's record, which SIGINT goes to. After it, `interrupted` says whether a Ctrl-C came while it was entered (to
    it, to the one outside it, or a SIGTERM taken as one where SIGINT is ignored).

    The guard that holds SIGINT is the one whose handler is installed (no list of its own to fall out of step), and
    a second Ctrl-C raised as it takes or gives back the handler leaves Python's own in place. (Blocking signals
    meanwhile would not do: Python runs a handler in the main thread as a call returns, whichever thread the
    signal reached. One run as `__exit__` is called, before its first line, leaves this one's handler: the guards
    that span a command (a local run's, an executor's) are closed again in a `finally`, and a command starts by
    giving back any guard's handler still installed, `release_stale`.)"""

    def __init__(self):
        self.interrupted = False
        self._owns = False
        self._outer: Interrupts | None = None
        self._seen = _RECEIVED[0]

    def __enter__(self) -> "Interrupts":
        self.interrupted, self._seen = False, _RECEIVED[0]
        if threading.current_thread() is not threading.main_thread():
            return self
        try:
            handler = signal.getsignal(signal.SIGINT)
            if handler is signal.default_int_handler:  # not where Ctrl-C is ignored
                self._owns = True  # first: a Ctrl-C raised as the call below returns finds it to give back
                signal.signal(signal.SIGINT, self._received)
            else:
                self._outer = _holder()
        except KeyboardInterrupt:  # the block will not run, nor __exit__
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        # No call before the handler is Python's again: Python runs a pending handler as a call returns
        self.interrupted = self.interrupted or _RECEIVED[0] != self._seen
        self._outer = None
        if self._owns:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self._owns = False

    close = __exit__  # for a `finally` around the `with`: again after a Ctrl-C cut `__exit__` short, a no-op else

    def _received(self, signum, frame):
        self.interrupted = True
        _RECEIVED[0] += 1
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.interrupted or _RECEIVED[0] != self._seen or (self._outer is not None and self._outer.interrupted):
            raise KeyboardInterrupt


def release_stale() -> None:
    """Python's own SIGINT handler again where a guard's is still installed: for the start of a command, where no
    guard is entered yet; a guard whose `__exit__` a Ctrl-C cut short would otherwise take every later Ctrl-C
    check in the process (one command after another in one process) for its old one."""
    holder = _holder()
    if holder is not None and threading.current_thread() is threading.main_thread():
        holder.close()


def _holder() -> Interrupts | None:
    """The Interrupts whose handler SIGINT has now, if any."""
    handler = signal.getsignal(signal.SIGINT)
    owner = getattr(handler, "__self__", None)
    return owner if isinstance(owner, Interrupts) and handler == owner._received else None


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
        _TERMS[0] += 1
        handler = signal.getsignal(signal.SIGINT)
        if handler is signal.default_int_handler or not callable(handler):
            _RECEIVED[0] += 1  # raised here: counted for the guards (an Interrupts' handler counts its own)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt


def check_held() -> None:
    """Raises a Ctrl-C that any Interrupts entered now recorded (a finalizer may have swallowed it): for code that
    runs inside one it was not given, such as a pipeline node inside a local run."""
    holder = _holder()
    if holder is not None:
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
        held = Interrupts()
        try:
            with held:
                try:
                    return function(*args, **kwargs)
                except Exception as error:
                    if from_ctrl_c(error):
                        raise KeyboardInterrupt from None
                    held.check()  # raises it, the error kept as its context for a debugger
                    raise
        finally:
            held.close()

    return kept
