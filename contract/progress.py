"""Progress of work that runs where no caller can be handed a line: TFX's executors and Beam's workers.

It is logged (loggers under `cats_vs_dogs.progress`, which a program embedding the pipeline configures like any
other) and shown on the process's stdout or stderr whatever the root logger's level, as Keras shows its epochs:
without --verbose, a long search or ingest still says where it is.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "cats_vs_dogs.progress"
if logging.getLogger(LOGGER).level == logging.NOTSET:  # shown at INFO unless a program set its level before
    logging.getLogger(LOGGER).setLevel(logging.INFO)


class _CurrentStream(logging.Handler):
    """Writes to sys.stdout or sys.stderr as they are when each line comes (a task's log, a test's capture)."""

    def __init__(self, stream: str):
        super().__init__()
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = getattr(sys, self._stream)
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging's own rule: a line that cannot be written is reported, not raised
            self.handleError(record)


def _logger(stream: str) -> logging.Logger:
    logger = logging.getLogger(f"{LOGGER}.{stream}")
    if not logger.handlers:
        logger.addHandler(_CurrentStream(stream))
        logger.propagate = False  # the root logger's level (quiet_logs: errors only) is not this output's
    return logger


def say(line: str) -> None:
    """A progress line on stdout, among the training's own lines."""
    _logger("stdout").info(line)


def note(line: str) -> None:
    """A progress line on stderr (a Beam worker's, which the runner relays)."""
    _logger("stderr").info(line)
