"""A Ctrl-C that C code turned into another error is still a Ctrl-C (contract.interrupts)."""

import dataclasses
import os
import pathlib
import signal
import time

import pytest

import pipeline_runner
from contract import interrupts
from contract.errors import INTERRUPTED
from tests.helpers import drops_a_ctrl_c_then_fails


def _as_c_code_reports_it():
    """What CPython raises when a KeyboardInterrupt is raised while C code (TensorFlow's C++ walking a tf.data
    structure, say) has called back into Python: a SystemError caused by it (_Py_CheckFunctionResult)."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as interrupt:
        raise SystemError("<built-in function __import__> returned a result with an exception set") from interrupt


def test_an_error_that_came_of_a_ctrl_c_is_told_from_one_that_did_not():
    with pytest.raises(SystemError) as raised:
        _as_c_code_reports_it()
    assert interrupts.from_ctrl_c(raised.value) and interrupts.from_ctrl_c(KeyboardInterrupt())
    assert not interrupts.from_ctrl_c(SystemError("returned a result with an exception set"))
    looped = ValueError("a cause that points back at itself")
    looped.__cause__ = looped
    assert not interrupts.from_ctrl_c(looped)


def test_an_executor_gives_its_launcher_the_ctrl_c_as_a_keyboard_interrupt_and_other_errors_as_they_were():
    with pytest.raises(KeyboardInterrupt):
        interrupts.ctrl_c_kept(_as_c_code_reports_it)()
    with pytest.raises(ValueError, match="a real fault"):
        interrupts.ctrl_c_kept(lambda: (_ for _ in ()).throw(ValueError("a real fault")))()
    assert interrupts.ctrl_c_kept(lambda x: x + 1)(1) == 2


def test_an_error_after_a_ctrl_c_that_c_code_dropped_is_the_ctrl_c_and_an_error_with_none_is_itself():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            interrupts.ctrl_c_kept(drops_a_ctrl_c_then_fails)()
        assert isinstance(raised.value.__context__, RuntimeError), "the error is kept for a debugger"
        with interrupts.Interrupts() as run:  # a local run's guard, the executor's nested in it
            with pytest.raises(KeyboardInterrupt):
                interrupts.ctrl_c_kept(drops_a_ctrl_c_then_fails)()
        assert run.interrupted
        with pytest.raises(RuntimeError, match="a real fault"):  # no Ctrl-C this time: the error as it was
            interrupts.ctrl_c_kept(lambda: (_ for _ in ()).throw(RuntimeError("a real fault")))()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_guard_says_after_it_whether_a_ctrl_c_came_while_it_was_entered_to_it_or_to_the_one_outside():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with interrupts.Interrupts() as run:
            with interrupts.Interrupts() as quiet:
                pass
            with interrupts.Interrupts() as nested:
                with pytest.raises(KeyboardInterrupt):
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(1)
        assert (run.interrupted, nested.interrupted, quiet.interrupted) == (True, True, False)
        with interrupts.Interrupts() as again:  # entered again: a new record
            pass
        assert not again.interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_sigterm_that_c_code_dropped_where_sigint_is_ignored_is_still_the_interrupt():
    """A background job (`cmd &`) has SIGINT ignored: no guard takes it, and SIGTERM is raised as a KeyboardInterrupt
    of its own (TermAsCtrlC); dropped by C code, it is still what stops the executor and the run."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with interrupts.TermAsCtrlC(), interrupts.Interrupts() as run:
            with pytest.raises(KeyboardInterrupt):
                interrupts.ctrl_c_kept(lambda: drops_a_ctrl_c_then_fails(signal.SIGTERM))()
        assert run.interrupted
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def _ctrl_c_at(function_name: str, line_text: str | None = None):
    """A trace function that sends SIGINT as `function_name` in contract/interrupts.py reaches the line holding
    `line_text` (None: as it is called, before its first line), whose handler runs there: a second Ctrl-C at the
    moment Python would run it after the call before (taking the handler, giving it back), every time."""
    import sys

    lines = pathlib.Path(interrupts.__file__).read_text().splitlines()

    def ctrl_c():
        sys.settrace(None)
        os.kill(os.getpid(), signal.SIGINT)

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != interrupts.__file__ or frame.f_code.co_name != function_name:
            return None
        if line_text is None:
            return ctrl_c()

        def line(frame, event, arg):
            if event == "line" and line_text in lines[frame.f_lineno - 1]:
                ctrl_c()
            return line
        return line
    return tracer


@pytest.mark.parametrize("moment", [("__enter__", "signal.signal(signal.SIGINT, self._received)"),
                                    ("__exit__", "self._owns = False")],
                         ids=["taking the handler", "giving it back"])
def test_a_ctrl_c_as_a_guard_takes_or_gives_back_the_handler_leaves_none_stale_to_blame_a_later_run(moment):
    import sys

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sys.settrace(_ctrl_c_at(*moment))
        try:
            with pytest.raises(KeyboardInterrupt):
                with interrupts.Interrupts():
                    time.sleep(0.2)
        finally:
            sys.settrace(None)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and interrupts._holder() is None
        with interrupts.Interrupts() as later:  # a later run in the same process, no Ctrl-C
            interrupts.check_held()
            later.check()
        assert not later.interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_that_cuts_a_guards_exit_short_is_not_blamed_on_later_work():
    """The guard's handler stays installed, recorded as interrupted: an executor's guard is closed again after it,
    and a command starts by releasing any other (a stale guard would otherwise fail every later check)."""
    import sys

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sys.settrace(_ctrl_c_at("__exit__"))
        with pytest.raises(KeyboardInterrupt):
            interrupts.ctrl_c_kept(time.sleep)(0.05)
        sys.settrace(None)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        sys.settrace(_ctrl_c_at("__exit__"))
        with pytest.raises(KeyboardInterrupt):
            with interrupts.Interrupts():  # a bare guard, no `finally`: left stale
                time.sleep(0.05)
        sys.settrace(None)
        assert interrupts._holder() is not None
        interrupts.release_stale()  # as a command starts
        with interrupts.Interrupts() as later:
            interrupts.check_held()
            later.check()
        assert not later.interrupted and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        sys.settrace(None)
        signal.signal(signal.SIGINT, previous)


def test_a_command_that_ends_in_such_an_error_says_it_was_interrupted_and_exits_130(monkeypatch, capsys):
    from cli import history

    interrupted = [dataclasses.replace(c, handler=lambda args: _as_c_code_reports_it()) if c.name == "models" else c
                   for c in history.COMMANDS]
    monkeypatch.setattr(history, "COMMANDS", tuple(interrupted))
    assert pipeline_runner.main(["models", "--output-dir", "somewhere"]) == INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted: `models` stopped before it finished" in err and "Traceback" not in err


def test_what_an_interrupt_left_half_built_is_collected_without_tensorflows_dump(monkeypatch, capsys):
    """A Ctrl-C in the middle of building a loop leaves tensor arrays never used; TensorFlow logs each one, with
    its stack, when it is collected, after the command's line."""
    import gc
    import logging

    import tensorflow as tf

    from cli import history, quiet_logs

    def half_built(args):
        with tf.Graph().as_default():
            written = tf.TensorArray(tf.float32, size=1).write(0, 1.0)  # noqa: F841  (never used, as interrupted)
            raise KeyboardInterrupt

    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger("tensorflow").addHandler(handler)
    try:
        interrupted = [dataclasses.replace(c, handler=half_built) if c.name == "models" else c
                       for c in history.COMMANDS]
        monkeypatch.setattr(history, "COMMANDS", tuple(interrupted))
        assert pipeline_runner.main(["models", "--output-dir", "somewhere"]) == INTERRUPTED
        gc.collect()
        assert "interrupted: `models` stopped before it finished" in capsys.readouterr().err
        assert not [message for message in logged if "never used" in message], logged
        quiet_logs.apply()  # the next command's start: TensorFlow's errors are logged again
        with tf.Graph().as_default():
            tf.TensorArray(tf.float32, size=1).write(0, 1.0)
        gc.collect()
        assert [message for message in logged if "never used" in message], "the check above could not fail"
    finally:
        logging.getLogger("tensorflow").removeHandler(handler)
        logging.getLogger("tensorflow").setLevel(logging.ERROR)


class _InterruptedWhenFinalized:
    """Ctrl-C arriving while a finalizer runs: Python prints the KeyboardInterrupt and drops it."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler runs here, inside the finalizer


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the interrupt the finalizer lost
def test_a_ctrl_c_a_finalizer_swallows_inside_a_run_reaches_the_checks_of_the_run_and_of_a_guard_nested_in_it():
    """A local run holds SIGINT (its Evaluator has no guard of its own) and the Trainer enters its own guard inside
    it: a Ctrl-C lost in a finalizer is seen by the nested guard's check and by the push's check_held."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with interrupts.Interrupts() as run:
            with interrupts.Interrupts() as trainer:
                interrupts.check_held()  # nothing yet
                finalized = _InterruptedWhenFinalized()
                del finalized  # the real SIGINT is raised inside __del__ and lost there
                with pytest.raises(KeyboardInterrupt):
                    trainer.check()
            assert run.interrupted
            with pytest.raises(KeyboardInterrupt):
                interrupts.check_held()
        interrupts.check_held()  # no guard entered: nothing held, nothing raised
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_deferred_ctrl_c_is_recorded_not_raised_and_cuts_no_wait_of_c_code_short():
    """SQLite's busy-wait sleeps in C: a signal delivered to the thread ends the sleep early, and a few Ctrl-Cs made
    ML Metadata give up on a store another program held locked. Deferred blocks SIGINT in its thread meanwhile."""
    import ctypes
    import threading

    libc = ctypes.CDLL(None)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with interrupts.Deferred() as deferred:
            ctrl_c = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
            ctrl_c.start()
            started = time.monotonic()
            libc.usleep(400_000)  # returns early when a signal interrupts it
            waited = time.monotonic() - started
            # sent before the block ends, however late its thread runs: after it, the Ctrl-C would stop the tests
            ctrl_c.join(30)
            time.sleep(0.05)
        assert deferred.received and waited >= 0.39, waited
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())  # unblocked again
        with interrupts.Deferred() as quiet:
            pass
        assert not quiet.received
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_sigterm_during_a_deferred_step_is_held_too_where_sigint_is_ignored():
    """A background job of a non-interactive shell (cron's, a scheduler's) has SIGINT ignored: a SIGTERM, which
    TermAsCtrlC then raises as a KeyboardInterrupt, must still wait for the step's end."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with interrupts.TermAsCtrlC():
            try:
                with interrupts.Deferred() as held:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.1)
            except KeyboardInterrupt:  # caught here: pytest would take it for a Ctrl-C of its own and stop
                pytest.fail("the SIGTERM stopped the step")
            assert held.received
            with pytest.raises(KeyboardInterrupt):  # outside the step, SIGTERM stops the command again
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.5)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
