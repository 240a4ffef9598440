"""A command whose stdout's reader leaves early (`... | head`) drops the rest of its output and ends as it would
have; a stdout that cannot be written for another reason (a full disk) is the command's one storage-fault line.
Each with stdout buffered, as in a person's shell, and unbuffered (PYTHONUNBUFFERED=1)."""

import os
import socket
import subprocess
import sys

import pytest

from cli import output
from contract import progress
from tests.helpers import ROOT, stdout_buffering_env

NOISE = ("Traceback", "Exception ignored", "BrokenPipe", "Logging error")
BUFFERING = pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])


def _command(tmp_path, stdout, unbuffered, *arguments, preexec_fn=None):
    """`schedule --local` by default: prints its crontab line on stdout in a fraction of a second, no TensorFlow."""
    (tmp_path / "data" / "cat").mkdir(parents=True, exist_ok=True)
    arguments = arguments or ("schedule", "--local", "--cron", "0 3 * * *", "--output-dir", str(tmp_path / "out"),
                              "--data-dir", str(tmp_path / "data"))
    env = stdout_buffering_env(unbuffered)
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
def test_a_full_disk_under_stdout_is_the_one_line_of_a_storage_fault(tmp_path, unbuffered):
    with open("/dev/full", "w") as full:
        result = _command(tmp_path, full, unbuffered)
    assert result.returncode == 1, result.stderr
    assert not [said for said in NOISE if said in result.stderr], result.stderr
    faults = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert faults == ["error: a storage fault stopped it: OSError: [Errno 28] No space left on device; fix that and "
                      "run the command again"], result.stderr


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
    stream = output.StdoutReaderMayLeave(os.fdopen(write_end, "w", buffering=1))
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
