"""What a command prints: what the run says, not every library's notices (`--verbose` shows everything).

The command line and the benchmarks apply the same rule.
"""

from __future__ import annotations

import logging
import os


class _SaidByTheCommand(logging.Filter):
    """TFX's launcher logs "Execution N failed." as an error before it raises; the command's own error line names
    the node and why, so a bare id above it says nothing more."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Execution %d failed."


_SAID_BY_THE_COMMAND = _SaidByTheCommand()


def apply(verbose: bool = False) -> None:
    """Keeps the terminal to what the run says; --verbose shows everything.

    Without it: no Python warnings (libraries' notices about Python versions,
    TFMA's divisions by zero on a one-class slice, Keras' remarks), TensorFlow's
    native logs at errors only (TFLite's too: see trainer.tflite), INFO logs
    off. Set in the environment too, so that Beam's worker processes inherit it.
    """
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        import warnings

        warnings.simplefilter("ignore")
    from absl import logging as absl_logging

    level = logging.INFO if verbose else logging.ERROR
    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.ERROR)
    logging.getLogger().setLevel(level)
    for noisy in ("tensorflow", "absl"):
        logging.getLogger(noisy).setLevel(level)
    if verbose:
        logging.getLogger("absl").removeFilter(_SAID_BY_THE_COMMAND)
    else:
        logging.getLogger("absl").addFilter(_SAID_BY_THE_COMMAND)
    # Beam's worker processes report every warning of theirs through the job service.
    logging.getLogger("apache_beam").setLevel(level if verbose else logging.ERROR)
    # A transform's failure is logged with its traceback there and raised by the pipeline too: the command
    # words the raised one (a full disk while ingest writes, say) in its one line.
    logging.getLogger("apache_beam.runners.common").setLevel(level if verbose else logging.CRITICAL)

