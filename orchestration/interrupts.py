"""Ctrl-C that stops a run even where a library swallows it.

Python raises KeyboardInterrupt wherever the main thread happens to be, and code that catches
everything there (Keras and TensorFlow have bare `except:` clauses on paths the Trainer takes)
drops it: the run goes on and may push the model the user meant to stop. Under `insistent()`,
once Ctrl-C is pressed the interrupt is raised again every second until the run's own handler
says it has taken it.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import threading
from collections.abc import Iterator

REPEAT_SECONDS = 1.0


class CtrlC:
    def __init__(self) -> None:
        self._pressed = threading.Event()
        self._taken = threading.Event()
        self._repeater: threading.Thread | None = None

    def _handler(self, signum, frame) -> None:
        if self._taken.is_set():  # the run is already stopping: its clean-up is not interrupted
            return
        if not self._pressed.is_set():
            self._pressed.set()
            self._repeater = threading.Thread(target=self._repeat, name="ctrl-c-repeat", daemon=True)
            self._repeater.start()
        raise KeyboardInterrupt

    def _repeat(self) -> None:
        while not self._taken.wait(REPEAT_SECONDS):
            _thread.interrupt_main(signal.SIGINT)  # runs _handler in the main thread

    def taken(self) -> None:
        """The run's handler has the interrupt: stop raising it."""
        self._taken.set()


@contextlib.contextmanager
def insistent() -> Iterator[CtrlC]:
    """Within the block, Ctrl-C is raised until `taken()`; outside it, SIGINT's handler is what it was."""
    ctrl_c = CtrlC()
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield ctrl_c
        return
    previous = signal.signal(signal.SIGINT, ctrl_c._handler)
    try:
        yield ctrl_c
    finally:
        ctrl_c.taken()
        if ctrl_c._repeater:
            ctrl_c._repeater.join()
        # signal.signal runs a pending SIGINT's handler (ours, which now ignores it) before it sets the old one
        signal.signal(signal.SIGINT, previous)
