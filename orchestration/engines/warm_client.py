"""A kfp.local task's command with warm task processes (orchestration.engines.warm_tasks):
`python -I -S warm_client.py SOCKET -m kfp.dsl.executor_main ARGS...`.

Hands the task to the zygote at SOCKET, passes on to the task's fork the signals a task's process gets (the
terminal's Ctrl-C, Ctrl-\\, Ctrl-Z and hang-up to the fork's process group, its children too, as the terminal
sends them; a `kill` of the task's process to the fork), and exits as the fork exits: the same code, or the same
signal. Waits for a zygote still importing (it holds a lock on its folder's `importing` file until it listens or
gives up); where there is no zygote or it declines the task, runs `python ARGS...` itself, in this process, as
kfp.local would have.
The standard library only, and no site packages (-S): it starts in milliseconds.
"""

import fcntl
import json
import os
import select
import signal
import socket
import sys
import time

TO_THE_GROUP = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)  # the terminal's: to every process of the task
TO_THE_TASK = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
WAIT_SECONDS = 120  # for a zygote still importing (warm_tasks.READY_SECONDS); then the task imports for itself
CLOCK_SLACK_SECONDS = 5  # how far in the future the zygote's start may seem (a file system's coarse or skewed times)


def main() -> None:
    path, argv = sys.argv[1], sys.argv[2:]
    try:
        reply, reader = _ask(path, argv)
    except KeyboardInterrupt:  # before the task started: as a fresh process would end
        _exit_as(-signal.SIGINT)
    if reply is None or "fresh" in reply:
        os.execv(sys.executable, [sys.executable, *argv])
    if "pid" not in reply:  # the zygote went while it answered: whether the task started is unknown
        _unknown("the warm process stopped as it started this task")
    task = reply["pid"]
    for number in TO_THE_GROUP:
        signal.signal(number, lambda received, _: _forward(os.killpg, task, received))
    for number in TO_THE_TASK:
        signal.signal(number, lambda received, _: _forward(os.kill, task, received))
    signal.signal(signal.SIGTSTP, lambda *_: _suspend(task))
    signal.signal(signal.SIGCONT, lambda *_: _forward(os.killpg, task, signal.SIGCONT))
    line = reader.readline()
    if not line:
        _wait_for(task)
        _unknown(f"the warm process stopped while this task ran (process {task})")
    _exit_as(json.loads(line)["exit"])


def _ask(path: str, argv: list):
    """The zygote's reply ({"pid"} or {"fresh"}, {} when it went before answering) and the rest of its answer;
    None when there is no zygote to ask."""
    conn = _connect(path)
    if conn is None:
        return None, None
    try:
        body = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        socket.send_fds(conn, [len(body).to_bytes(8, "big") + body], [0, 1, 2])
    except (OSError, ValueError):  # a closed standard stream, an environment JSON cannot carry: not sent
        return None, None
    reader = conn.makefile("rb")
    try:
        return json.loads(reader.readline() or b"{}"), reader
    except (OSError, ValueError):
        return {}, None


def _connect(path: str):
    """A connection to the zygote, once it listens; None where there is none to ask (it never listened, it gave
    up or left, or it has been importing for longer than WAIT_SECONDS)."""
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
            return conn
        except FileNotFoundError:
            conn.close()
            if _importing(path):
                time.sleep(0.05)
            elif not os.path.exists(path):  # none, or it gave up (one that has just started listening: ask it)
                return None
        except OSError:  # refused: the zygote stopped listening
            conn.close()
            return None


def _importing(path: str) -> bool:
    """Whether the zygote is still importing: its folder's `importing` file is there (it goes as the zygote listens
    or gives up), locked (the lock goes with the zygote), and younger than WAIT_SECONDS. Its age, not this client's
    wait, bounds the wait: a zygote that hangs costs a run one wait, not one for each of its tasks."""
    try:
        fd = os.open(os.path.join(os.path.dirname(path), "importing"), os.O_RDONLY)  # warm_tasks.IMPORTING
    except OSError:
        return False
    try:
        # a file from the future (the clock stepped back, a file server's clock ahead) bounds nothing: not waited for
        if not -CLOCK_SLACK_SECONDS <= time.time() - os.fstat(fd).st_mtime <= WAIT_SECONDS:
            return False
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:  # taken
        return True
    except OSError:  # no locks on this file system: nothing to wait for
        return False
    finally:
        os.close(fd)


def _forward(send, task: int, number: int) -> None:
    try:
        send(task, number)
    except ProcessLookupError:
        pass


def _suspend(task: int) -> None:
    """Ctrl-Z: the task's processes stop, then this one (SIGCONT, passed on, resumes them)."""
    _forward(os.killpg, task, signal.SIGTSTP)
    os.kill(os.getpid(), signal.SIGSTOP)


def _exit_as(code: int) -> None:
    if code < 0:
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL and SIGSTOP keep theirs
            pass
        os.kill(os.getpid(), -code)
        code = 128 - code
    sys.exit(code)


def _wait_for(pid: int) -> None:
    """Until the process ends (another's child: no exit status; pidfd_open knows it even as an unreaped zombie,
    and never a later process given the same number)."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # a kernel before 5.3
        while os.path.exists(f"/proc/{pid}") and not _zombie(pid):
            time.sleep(0.2)
        return
    select.select([handle], [], [])
    os.close(handle)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def _unknown(what: str) -> None:
    # Python's exit for a message: the line on stderr, the code of a failed command
    sys.exit(f"error: {what}; its exit code is unknown: run it again, or with --fresh-task-processes")


if __name__ == "__main__":
    main()
