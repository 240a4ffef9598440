"""A kfp.local task's command with warm task processes (orchestration.engines.warm_tasks):
`python -I -S warm_client.py SOCKET -m kfp.dsl.executor_main ARGS...`.

Hands the task to the zygote at SOCKET and exits as the task's fork exits (the same code, or the same signal);
where the zygote is not there or declines, runs `python ARGS...` itself, in this process, as kfp.local would have.
The standard library only, and no site packages (-S): it starts in milliseconds.
"""

import json
import os
import signal
import socket
import sys
import time


def main() -> None:
    path, argv = sys.argv[1], sys.argv[2:]
    reply, reader = _ask(path, argv)
    if "pid" not in reply:
        os.execv(sys.executable, [sys.executable, *argv])
    task = reply["pid"]
    # The task is in this process's group: a Ctrl-C at the terminal reaches it as it would reach this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for number in (signal.SIGTERM, signal.SIGHUP):  # sent to this process alone: the task's
        signal.signal(number, lambda received, _: _forward(task, received))
    line = reader.readline()
    if not line:  # the zygote went before its task: wait for the task itself
        while _alive(task):
            time.sleep(0.2)
        sys.exit(1)
    code = json.loads(line)["exit"]
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


def _ask(path: str, argv: list) -> tuple:
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        body = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                           "pgid": os.getpgrp()}).encode()
        socket.send_fds(conn, [len(body).to_bytes(8, "big") + body], [0, 1, 2])
        reader = conn.makefile("rb")
        return json.loads(reader.readline() or b"{}"), reader
    except (OSError, ValueError):
        return {}, None


def _forward(task: int, number: int) -> None:
    try:
        os.kill(task, number)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    main()
