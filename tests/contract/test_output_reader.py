"""A command whose stdout's reader leaves early (`... | head`) drops the rest of its output and ends as it would
have; a stdout that cannot be written for another reason (a full disk) is the command's one storage-fault line.
Each with stdout buffered, as in a person's shell, and unbuffered (PYTHONUNBUFFERED=1)."""

import os
import pty
import resource
import socket
import subprocess
import sys

import pytest

from cli import output
from contract import progress
from tests.helpers import ROOT, file_size_limited, stdout_buffering_env

NOISE = ("Traceback", "Exception ignored", "BrokenPipe", "Logging error")
FULL_DISK = ("error: its output could not be written: OSError: [Errno 28] No space left on device; what it printed "
             "from then on is lost")
BUFFERING = pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])


def _schedule(tmp_path):
    """`schedule --local`: prints its crontab line on stdout in a fraction of a second, no TensorFlow imported."""
    (tmp_path / "data" / "cat").mkdir(parents=True, exist_ok=True)
    return ("schedule", "--local", "--cron", "0 3 * * *", "--output-dir", str(tmp_path / "out"), "--data-dir",
            str(tmp_path / "data"))


def _command(tmp_path, stdout, unbuffered, *arguments, preexec_fn=None, env=None):
    """`pipeline_runner.py ARGUMENTS`, `schedule --local` by default."""
    arguments = arguments or _schedule(tmp_path)
    env = env or stdout_buffering_env(unbuffered)
    return subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), *arguments], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env, timeout=120, preexec_fn=preexec_fn)


@BUFFERING
@pytest.mark.parametrize("arguments", [(), ("--help",), ("schedule", "--help")], ids=["schedule", "help", "sub-help"])
def test_a_reader_that_left_before_the_output_costs_the_command_nothing(tmp_path, unbuffered, arguments):
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `head -1` does once it has its line
    try:
        result = _command(tmp_path, write_end, unbuffered, *arguments)
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert not [said for said in (*NOISE, "error:") if said in result.stderr], result.stderr


@BUFFERING
def test_a_socket_whose_peer_closed_is_a_reader_that_left(tmp_path, unbuffered):
    mine, peer = socket.socketpair()
    peer.close()
    with mine:
        result = _command(tmp_path, mine.fileno(), unbuffered)
    assert result.returncode == 0, result.stderr
    assert not [said for said in (*NOISE, "error:") if said in result.stderr], result.stderr


@BUFFERING
@pytest.mark.parametrize("arguments, code", [((), 0), (("models", "--output-dir", "nothere"), 2)],
                         ids=["schedule", "refusal"])
def test_with_stderrs_reader_gone_too_the_command_keeps_its_own_exit_code(tmp_path, unbuffered, arguments, code):
    read_end, write_end = os.pipe()
    os.close(read_end)  # `... 2>&1 | head -1`, or a `tee` that died
    try:
        result = subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"),
                                 *(arguments or _schedule(tmp_path))], stdout=write_end, stderr=write_end,
                                cwd=tmp_path, env=stdout_buffering_env(unbuffered), timeout=120)
    finally:
        os.close(write_end)
    assert result.returncode == code


@BUFFERING
def test_a_terminal_that_hung_up_is_a_reader_that_left(tmp_path, unbuffered):
    controller, terminal = pty.openpty()
    os.close(controller)  # the terminal window closed (a run started with setsid or nohup goes on)
    try:
        result = _command(tmp_path, terminal, unbuffered)
    finally:
        os.close(terminal)
    assert result.returncode == 0, result.stderr
    assert not [said for said in (*NOISE, "error:") if said in result.stderr], result.stderr


@BUFFERING
@pytest.mark.parametrize("arguments", [(), ("--help",)], ids=["schedule", "help"])
def test_a_full_disk_under_stdout_is_the_one_line_of_a_storage_fault(tmp_path, unbuffered, arguments):
    with open("/dev/full", "w") as full:
        result = _command(tmp_path, full, unbuffered, *arguments)
    assert result.returncode == 1, result.stderr
    assert not [said for said in NOISE if said in result.stderr], result.stderr
    faults = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert faults == [FULL_DISK], result.stderr


def test_a_closed_stdout_is_no_stdout(tmp_path):
    result = _command(tmp_path, None, False, preexec_fn=lambda: os.close(1))
    assert result.returncode == 0, result.stderr
    assert not [said for said in NOISE if said in result.stderr], result.stderr


def test_the_same_command_with_its_reader_there_prints_its_line(tmp_path):
    result = _command(tmp_path, subprocess.PIPE, False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("0 3 * * * "), result.stdout


def test_what_the_reader_did_not_take_is_dropped_and_writing_goes_on(monkeypatch, capfd):
    read_end, write_end = os.pipe()
    stream = output.ReaderMayLeave(os.fdopen(write_end, "w", buffering=1))
    monkeypatch.setattr(sys, "stdout", stream)
    with os.fdopen(read_end, "rb") as reader:
        stream.write("the line the reader takes\n")
        assert reader.readline() == b"the line the reader takes\n"
    # The pipe holds 64 KiB: this much output finds the reader gone, line by line, as a training's log would.
    for epoch in range(20_000):
        assert stream.write(f"epoch {epoch}: a line of a training's log\n") > 0
        if epoch % 1000 == 0:
            progress.say(f"a progress line after epoch {epoch}")  # through logging, which reports what it cannot write
    stream.flush()
    assert os.path.samestat(os.fstat(stream.fileno()), os.stat(os.devnull))  # the rest went to /dev/null
    monkeypatch.undo()
    stream.close()
    assert not [said for said in NOISE if said in capfd.readouterr().err]


@pytest.mark.parametrize("code", [0, 2])
def test_a_full_disk_met_mid_command_is_said_once_as_it_ends(monkeypatch, capsys, code):
    with open("/dev/full", "w") as full:  # buffered, as a shell's redirection is
        stream = output.ReaderMayLeave(full)
        monkeypatch.setattr(sys, "stdout", stream)
        print("a line flushed mid-command", flush=True)  # the command goes on: its work is not its log
        progress.say("a progress line, through logging")
        print("a later line")
        assert output.finish(code) == (code or 1)
        assert capsys.readouterr().err.splitlines() == [FULL_DISK]


def test_a_line_on_stderr_comes_below_what_stdout_held(monkeypatch):
    """`command 2>&1 | cat`: one pipe for both, stdout buffered as a pipe is; a warning printed after the table
    it speaks of must come out after it."""
    read_end, write_end = os.pipe()
    stdout = output.ReaderMayLeave(os.fdopen(write_end, "w"))
    stderr = output.ReaderMayLeave(os.fdopen(os.dup(write_end), "w", buffering=1), said_elsewhere=False)
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    print("the table")
    print("warning: 2 of 3 files could not be classified", file=sys.stderr)
    monkeypatch.undo()
    stdout.close()
    stderr.close()
    with os.fdopen(read_end) as reader:
        assert reader.read().splitlines() == ["the table", "warning: 2 of 3 files could not be classified"]


def _file_size_limit(size):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


@BUFFERING
def test_a_write_cut_short_by_a_file_size_limit_is_said_not_lost(tmp_path, unbuffered):
    """`--help` is one write of 4 KB: with stdout unbuffered, the bare file takes the first KB and the text stream
    would count the whole as written."""
    with open(tmp_path / "help.txt", "w") as log:
        result = _command(tmp_path, log, unbuffered, "--help", preexec_fn=_file_size_limit(1024),
                          env=file_size_limited(stdout_buffering_env(unbuffered)))
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == ["error: its output could not be written: OSError: [Errno 27] File too "
                                          "large; what it printed from then on is lost"], result.stderr


@BUFFERING
def test_a_log_that_could_not_take_the_commands_own_lines_is_a_failure(tmp_path, unbuffered):
    """The cron line's `>> log 2>&1`, the log's file full after the crontab line (stdout) and within the notes
    that follow it on stderr: nowhere left to say it, but the exit code does."""
    (tmp_path / "data" / "cat").mkdir(parents=True)
    size = len(subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), *_schedule(tmp_path)],
                              capture_output=True, text=True, cwd=ROOT, timeout=120).stdout) + 40
    with open(tmp_path / "scheduled_runs.log", "w") as log:
        result = subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), *_schedule(tmp_path)],
                                stdout=log, stderr=log, cwd=ROOT, timeout=120, preexec_fn=_file_size_limit(size),
                                env=file_size_limited(stdout_buffering_env(unbuffered)))
    assert result.returncode == 1
    assert (tmp_path / "scheduled_runs.log").read_text().startswith("0 3 * * * ")
