"""Progress from inside executors and workers: logged, and shown whatever the root logger's level."""

import logging

from cli import quiet_logs
from contract import progress


def test_progress_is_shown_on_its_stream_when_the_command_keeps_other_logs_to_errors(capsys):
    quiet_logs.apply(False)  # as every command without --verbose: the root logger at errors only
    logging.getLogger("some.library").info("a library's notice")
    progress.say("Tuner trial 2 failed: loss is nan")
    progress.note("  ingest: worker 7 checked 500 of 1000 items")
    captured = capsys.readouterr()
    assert captured.out == "Tuner trial 2 failed: loss is nan\n"
    assert captured.err == "  ingest: worker 7 checked 500 of 1000 items\n"


def test_a_program_that_embeds_the_pipeline_can_quiet_progress_as_any_log():
    import io
    import sys

    shown = io.StringIO()
    out, sys.stdout = sys.stdout, shown
    logger = logging.getLogger(progress.LOGGER)
    try:
        logger.setLevel(logging.WARNING)
        progress.say("not shown")
        logger.setLevel(logging.INFO)
        progress.say("shown")
    finally:
        sys.stdout = out
        logger.setLevel(logging.INFO)
    assert shown.getvalue() == "shown\n"


def test_tfxs_bare_execution_failed_line_is_left_to_the_commands_own_error_and_verbose_shows_it(caplog):
    from absl import logging as absl_logging

    try:
        quiet_logs.apply(False)
        with caplog.at_level(logging.ERROR, logger="absl"):
            absl_logging.error("Execution %d failed.", 7)  # TFX's launcher, before it raises
            absl_logging.error("another error: %s", "kept")
        assert [r.getMessage() for r in caplog.records] == ["another error: kept"]
        caplog.clear()
        quiet_logs.apply(True)
        with caplog.at_level(logging.ERROR, logger="absl"):
            absl_logging.error("Execution %d failed.", 7)
        assert [r.getMessage() for r in caplog.records] == ["Execution 7 failed."]
    finally:
        quiet_logs.apply(False)


_FINALIZERS = """
import ctypes
import pipeline_runner

pipeline_runner._ctrl_c_printed_once()


def made_by_c_code_of_a_ctrl_c():
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as ctrl_c:
            raise SystemError("<built-in function __import__> returned a result with an exception set") from ctrl_c
    except SystemError as error:
        return error


class Interrupted:
    def __del__(self):
        raise KeyboardInterrupt  # Ctrl-C landing in a finalizer while a command unwinds


class InterruptedInC:
    def __del__(self):
        raise made_by_c_code_of_a_ctrl_c()


class Broken:
    def __del__(self):
        raise ValueError("a finalizer's own fault")


def printed_by_c_code(error):
    # C code that cannot raise an error prints it with CPython's PyErr_Print (TensorFlow's C++ among them), as
    # PyRun_SimpleString does with the error of the code it runs.
    ctypes.pythonapi.PyRun_SimpleString(f"raise {error}".encode())  # in this module's namespace


Interrupted()
InterruptedInC()
Broken()
printed_by_c_code("made_by_c_code_of_a_ctrl_c()")
printed_by_c_code("KeyboardInterrupt()")
printed_by_c_code("ValueError('a fault of the C code')")
print("went on")
"""


def test_ctrl_c_in_a_finalizer_or_printed_by_c_code_adds_nothing_to_the_commands_line_and_other_faults_show(tmp_path):
    import subprocess
    import sys

    from tests.helpers import ROOT

    result = subprocess.run([sys.executable, "-c", _FINALIZERS], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout == "went on\n", result.stderr
    assert "KeyboardInterrupt" not in result.stderr and "exception set" not in result.stderr, result.stderr
    assert "Exception ignored in" in result.stderr and "a finalizer's own fault" in result.stderr
    assert "ValueError: a fault of the C code" in result.stderr
