"""Warm task processes under kfp.local's own SubprocessRunner (orchestration.engines.warm_tasks): lightweight
components run as forks of the zygote, each in a process group of its own, with the task's variables; a
task whose environment differs runs in a fresh process, one that comes while the zygote imports waits for it; a task's
failure, exit code and signal are the task's own. The zygote here preloads kfp's executor only (the rehearsal's
preloads TensorFlow, TFX and the pipeline's executors: tests/e2e/test_kubeflow_local.py checks its tasks start
warm)."""

import errno
import os
import signal
import subprocess
import sys

import pytest
from kfp import dsl, local

from orchestration.engines import warm_client, warm_tasks
from tests.helpers import ROOT

PRELOAD = ("kfp.dsl.executor",)
# What kfp.local's shell line sets for a task; through env(1), so that the rest of the environment is this
# process's as the zygote inherited it (a library here may have set variables that os.environ does not show).
AS_A_TASK = ["env", "_KFP_RUNTIME=true"]


def where() -> str:
    import os

    import kfp.dsl  # as a task's process has it (`_KFP_RUNTIME`): the executor's part of the SDK, no DSL

    runtime = os.environ.get("_KFP_RUNTIME")
    return f"{os.getpid()} {os.getppid()} {os.getpgrp()} {runtime} {hasattr(kfp.dsl, 'pipeline')}"


def runs_a_python() -> str:
    import subprocess

    return subprocess.run(["python3", "-c", "print('child ok')"], capture_output=True, text=True).stdout.strip()


def fails() -> str:
    raise ValueError("the task's own reason")


def exits(code: int) -> str:
    import sys

    sys.exit(code)


WHERE = dsl.component(where, base_image="python:3.11", install_kfp_package=False)
FAILS = dsl.component(fails, base_image="python:3.11", install_kfp_package=False)
EXITS = dsl.component(exits, base_image="python:3.11", install_kfp_package=False)
RUNS_PYTHON3 = dsl.component(runs_a_python, base_image="python:3.11", install_kfp_package=False)


@pytest.fixture
def kfp_local(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path), raise_on_error=True)


def _where(output: str) -> dict:
    pid, parent, group, runtime, dsl = output.split()
    return {"pid": int(pid), "parent": int(parent), "group": int(group), "runtime": runtime, "dsl": dsl}


def test_tasks_fork_from_the_zygote_in_their_own_group_with_the_shells_variables(kfp_local):
    with warm_tasks.task_processes(preload=PRELOAD) as zygote:
        assert zygote.wait_ready(), open(zygote.log).read()
        first, second = (_where(WHERE().output) for _ in range(2))
        # kfp.local replaces every `python3` in the task's command, its body's too: there, this Python
        assert RUNS_PYTHON3().output == "child ok"
        summary = zygote.stop()
    assert first["parent"] == second["parent"] == zygote.process.pid
    assert first["pid"] != second["pid"]
    assert first["group"] == first["pid"], "a group of its own: signals reach it through its client alone"
    assert first["runtime"] == "true" and first["dsl"] == "False", "kfp loaded as a task's process loads it"
    assert summary.strip() == "kfp.local tasks: 3 started from the warm process"
    assert not os.path.exists(zygote.folder)


def test_a_task_whose_environment_differs_runs_in_a_fresh_process(kfp_local):
    with warm_tasks.task_processes(preload=PRELOAD) as zygote:
        assert zygote.wait_ready()
        os.environ["CATS_VS_DOGS_TEST_VARIABLE"] = "set after the zygote started"
        try:
            changed = _where(WHERE().output)
        finally:
            del os.environ["CATS_VS_DOGS_TEST_VARIABLE"]
        warm = _where(WHERE().output)
        summary = zygote.stop()
    assert changed["parent"] != zygote.process.pid
    assert warm["parent"] == zygote.process.pid
    assert "1 started from the warm process, 1 in a fresh process (an environment that differs: " \
           "CATS_VS_DOGS_TEST_VARIABLE)" in summary


def _parent_of_a_task(zygote, tmp_path) -> subprocess.Popen:
    """A task's client, started at once; the task writes its parent's process id to `parent` (kfp's executor logs
    on its standard output)."""
    (tmp_path / "parent.py").write_text(f"import os, sys\nopen({str(tmp_path / 'parent')!r}, 'w')"
                                        ".write(str(os.getppid()))\nsys.exit(0)\n")
    return subprocess.Popen([*AS_A_TASK, *zygote.command, "-m", "kfp.dsl.executor_main", "--component_module_path",
                             str(tmp_path / "parent.py"), "--function_to_execute", "f"], stdout=subprocess.DEVNULL)


def _runs_fresh_at_once(zygote, tmp_path) -> None:
    """A task started now runs in a fresh process, without waiting out the client's whole wait."""
    import time

    started = time.monotonic()
    task = _parent_of_a_task(zygote, tmp_path)
    task.wait(timeout=60)
    assert time.monotonic() - started < 30, "not the client's whole wait, nor a forked process's life"
    assert task.returncode == 0 and int((tmp_path / "parent").read_text()) != zygote.process.pid


def _gated(monkeypatch, tmp_path, module: str = "tests.orchestration.engines.gated_import") -> tuple:
    gate = tmp_path / "gate"
    monkeypatch.setenv("CATS_VS_DOGS_TEST_GATE", str(gate))  # before the zygote starts: the tasks' too
    return gate, (*PRELOAD, module)


def test_a_task_that_comes_while_the_zygote_imports_waits_for_it_and_starts_warm(tmp_path, monkeypatch):
    import time

    gate, preload = _gated(monkeypatch, tmp_path)
    with warm_tasks.task_processes(preload=preload) as zygote:
        task = _parent_of_a_task(zygote, tmp_path)
        time.sleep(1)  # the client finds no socket, and the lock taken
        assert not os.path.exists(zygote.socket)
        gate.touch()
        task.wait(timeout=60)
        summary = zygote.stop()
    assert task.returncode == 0 and int((tmp_path / "parent").read_text()) == zygote.process.pid
    assert summary.strip() == "kfp.local tasks: 1 started from the warm process"


@pytest.mark.parametrize("ending", ["its import fails", "it is killed"])
def test_a_task_waiting_for_a_zygote_that_never_listens_runs_in_a_fresh_process(ending, tmp_path, monkeypatch):
    import time

    (tmp_path / "fails_at_the_gate.py").write_text(
        "import os, time\nwhile not os.path.exists(os.environ['CATS_VS_DOGS_TEST_GATE']):\n    time.sleep(0.05)\n"
        "raise ImportError('not today')\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    gate, preload = _gated(monkeypatch, tmp_path, "fails_at_the_gate")
    with warm_tasks.task_processes(preload=preload) as zygote:
        task = _parent_of_a_task(zygote, tmp_path)
        time.sleep(1)
        assert task.poll() is None
        started = time.monotonic()
        if ending == "it is killed":
            os.kill(zygote.process.pid, signal.SIGKILL)  # the lock goes with it
        else:
            gate.touch()
        task.wait(timeout=60)
        waited = time.monotonic() - started
        summary = zygote.stop()
    assert task.returncode == 0 and int((tmp_path / "parent").read_text()) != zygote.process.pid
    assert waited < 30, "not the client's whole wait: it goes fresh as the zygote gives up"
    assert ("importing fails_at_the_gate failed: ImportError: not today" in summary if ending == "its import fails"
            else f"left with code -{int(signal.SIGKILL)} before serving" in summary)


def test_a_process_an_import_forked_holds_no_task_after_the_zygote_gave_up(tmp_path, monkeypatch):
    # the fork shares the zygote's open lock and outlives it
    (tmp_path / "forks_then_fails.py").write_text(
        "import os, time\nif os.fork() == 0:\n    time.sleep(60)\n    os._exit(0)\nraise ImportError('not today')\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    with warm_tasks.task_processes(preload=(*PRELOAD, "forks_then_fails")) as zygote:
        assert not zygote.wait_ready()
        _runs_fresh_at_once(zygote, tmp_path)
        zygote.stop()


def test_a_zygote_importing_for_longer_than_a_client_waits_costs_the_run_one_wait(tmp_path, monkeypatch):
    import time

    _, preload = _gated(monkeypatch, tmp_path)  # never opened: the zygote imports until it is stopped
    with warm_tasks.task_processes(preload=preload) as zygote:
        long_ago = time.time() - warm_client.WAIT_SECONDS - 1
        os.utime(os.path.join(zygote.folder, warm_tasks.IMPORTING), (long_ago, long_ago))  # as after the first's wait
        _runs_fresh_at_once(zygote, tmp_path)
        summary = zygote.stop()
    assert "the warm process was still importing" in summary


def test_a_file_system_without_locks_still_gets_a_zygote(kfp_local, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")  # as NFS without its lock daemon answers

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with warm_tasks.task_processes(preload=PRELOAD) as zygote:
        monkeypatch.undo()
        assert not os.path.exists(os.path.join(zygote.folder, warm_tasks.IMPORTING))  # no task waits for nothing
        assert zygote.wait_ready()
        assert _where(WHERE().output)["parent"] == zygote.process.pid
        summary = zygote.stop()
    assert summary.strip() == "kfp.local tasks: 1 started from the warm process"


def _socket_path_of(length: int, tmp_path, monkeypatch) -> None:
    """tempfile's folder such that a zygote's socket path has `length` bytes (its folder is kfp-warm-XXXXXXXX, 17
    characters, then /zygote.sock)."""
    import tempfile

    padding = length - len(str(tmp_path)) - len("/") - len("/kfp-warm-XXXXXXXX/zygote.sock")
    assert padding > 0, tmp_path
    (tmp_path / ("p" * padding)).mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / ("p" * padding)))


def test_a_socket_path_at_the_systems_limit_still_gets_a_zygote(kfp_local, tmp_path, monkeypatch):
    # A socket's path holds at most 107 bytes (108 with its NUL): the zygote binds under a name no longer than it.
    _socket_path_of(107, tmp_path, monkeypatch)
    with warm_tasks.task_processes(preload=PRELOAD) as zygote:
        assert len(zygote.socket) == 107, zygote.socket
        assert zygote.wait_ready(), open(zygote.log).read()
        assert _where(WHERE().output)["parent"] == zygote.process.pid
        zygote.stop()


def test_a_socket_path_past_the_limit_runs_every_task_fresh_and_says_why(kfp_local, tmp_path, monkeypatch):
    import time

    _socket_path_of(110, tmp_path, monkeypatch)
    started = time.monotonic()
    with warm_tasks.task_processes(preload=PRELOAD) as zygote:
        assert not zygote.wait_ready()  # no socket a client could reach: it gives up before importing
        assert _where(WHERE().output)["parent"] != zygote.process.pid
        summary = zygote.stop()
    assert time.monotonic() - started < 60
    assert summary == f"kfp.local tasks: every one in a fresh process (no warm process: cannot listen at " \
                      f"{zygote.socket}: AF_UNIX path too long)\n"


def test_an_importing_file_from_the_future_is_not_waited_for(tmp_path, monkeypatch):
    import time

    _, preload = _gated(monkeypatch, tmp_path)  # never opened: the zygote imports until it is stopped
    with warm_tasks.task_processes(preload=preload) as zygote:
        ahead = time.time() + 3600  # the clock stepped back after the zygote started, or a file server's ahead
        os.utime(os.path.join(zygote.folder, warm_tasks.IMPORTING), (ahead, ahead))
        _runs_fresh_at_once(zygote, tmp_path)
        zygote.stop()


def test_a_zygote_that_cannot_start_leaves_no_folder(tmp_path, monkeypatch):
    import resource
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
        with pytest.raises(OSError) as raised:
            while True:  # every descriptor taken: the folder is made, its lock file cannot be opened
                held.append(os.open(os.devnull, os.O_RDONLY))
        assert raised.value.errno == errno.EMFILE
        with pytest.raises(OSError) as raised:
            warm_tasks.Zygote(PRELOAD)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert raised.value.errno == errno.EMFILE
    assert list(tmp_path.iterdir()) == []


def test_a_run_whose_stdin_is_closed_still_gets_a_zygote(tmp_path):
    program = ("import os, subprocess, sys\n"
               "from orchestration.engines import warm_tasks\n"
               "assert not os.path.exists('/proc/self/fd/0')\n"
               "with warm_tasks.task_processes(preload=('kfp.dsl.executor',)) as zygote:\n"
               "    assert zygote.wait_ready()\n"
               f"    subprocess.run(['env', '_KFP_RUNTIME=true', *zygote.command, '-m', 'kfp.dsl.executor_main',\n"
               f"                    '--component_module_path', {str(tmp_path / 'parent.py')!r},\n"
               "                    '--function_to_execute', 'f'],\n"
               "                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)\n"
               "    print(zygote.stop().strip(), zygote.process.pid)\n")
    (tmp_path / "parent.py").write_text(f"import os, sys\nopen({str(tmp_path / 'parent')!r}, 'w')"
                                        ".write(str(os.getppid()))\nsys.exit(0)\n")
    result = subprocess.run(["sh", "-c", 'exec "$0" -c "$1" 0<&-', sys.executable, program], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    line, pid = result.stdout.strip().rsplit(" ", 1)
    assert line == "kfp.local tasks: 1 started from the warm process"
    assert int((tmp_path / "parent").read_text()) == int(pid)


def test_a_tasks_failure_and_exit_code_are_its_own(kfp_local, capfd):
    with warm_tasks.task_processes(preload=PRELOAD) as zygote:
        assert zygote.wait_ready()
        with pytest.raises(RuntimeError, match="fails"):
            FAILS()
        assert "ValueError: the task's own reason" in capfd.readouterr().out
        with pytest.raises(RuntimeError, match="exits"):
            EXITS(code=3)
        summary = zygote.stop()
    assert "2 started from the warm process" in summary


def test_the_client_exits_with_the_tasks_code_or_signal_and_runs_any_other_command_itself(tmp_path):
    (tmp_path / "code.py").write_text("import sys\nsys.exit(7)\n")
    (tmp_path / "term.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    with warm_tasks.task_processes(preload=PRELOAD) as zygote:
        assert zygote.wait_ready()
        client = [*AS_A_TASK, *zygote.command]

        def task(name):  # the component module's code runs as kfp's executor loads it
            return subprocess.run([*client, "-m", "kfp.dsl.executor_main", "--component_module_path",
                                   str(tmp_path / f"{name}.py"), "--function_to_execute", "f"], capture_output=True)

        assert task("code").returncode == 7
        assert task("term").returncode == -signal.SIGTERM
        # kfp's executor is the only command the zygote forks for: this one the client runs itself
        assert subprocess.run([*client, str(tmp_path / "code.py")]).returncode == 7
        summary = zygote.stop()
    assert "2 started from the warm process, 1 in a fresh process (a command other than kfp's executor)" in summary


def test_a_ctrl_c_at_the_terminal_reaches_the_task_and_a_killed_client_takes_its_task_with_it(tmp_path):
    """The terminal sends SIGINT to its foreground process group, the client's: it passes it on to the fork's."""
    marker = tmp_path / "pid"
    program = ("import sys, time\n"
               "from orchestration.engines import warm_tasks\n"
               "with warm_tasks.task_processes(preload=('kfp.dsl.executor',)) as zygote:\n"
               "    assert zygote.wait_ready()\n"
               "    print(*zygote.command, flush=True)\n"
               "    sys.stdin.readline()\n")
    server = subprocess.Popen([sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=os.getcwd())
    try:
        launcher = server.stdout.readline().split()
        assert launcher, "the zygote did not start"
        sleeper = tmp_path / "sleeper.py"
        sleeper.write_text("import os, sys, time\n"
                           f"open({str(marker)!r}, 'w').write(str(os.getpid()))\n"
                           "try:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n"
                           f"    open({str(marker)!r} + '.interrupted', 'w').close()\n    raise\n")
        task = [*AS_A_TASK, *launcher, "-m", "kfp.dsl.executor_main", "--component_module_path",
                str(sleeper), "--executor_input", "{}", "--function_to_execute", "absent"]
        interrupted = subprocess.Popen(task, process_group=0, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT)
        pid = _wait_for(marker)
        os.killpg(interrupted.pid, signal.SIGINT)  # the group, as the terminal does
        assert interrupted.wait(timeout=30) == -signal.SIGINT
        assert (tmp_path / "pid.interrupted").exists()
        assert not _alive(pid)

        marker.unlink()
        killed = subprocess.Popen(task, process_group=0, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        pid = _wait_for(marker)
        killed.kill()  # the client alone, as `kill -9` of the task's process would
        killed.wait()
        for _ in range(100):
            if not _alive(pid):
                break
            import time
            time.sleep(0.1)
        assert not _alive(pid), "the killed client's task was left running"
    finally:
        server.stdin.close()
        server.wait(timeout=60)


def _wait_for(marker, number: bool = True) -> int:
    import time

    for _ in range(300):
        if marker.exists() and marker.read_text():
            return int(marker.read_text()) if number else 0
        time.sleep(0.1)
    raise AssertionError("the task never started")


def _alive(pid: int) -> bool:
    # The process can be reaped between the signal and the read: its /proc entry then vanishes or reads ESRCH.
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return not state.split(") ")[1].startswith("Z")


# Task modules that end the way a process can: kfp's executor loads the module (its code runs), and each one ends
# the process itself. OUT is a file the task writes.
ENDINGS = {
    "a thread still running": "import threading, time\n"
                              "late = lambda: (time.sleep(0.5), open(OUT, 'w').write('joined'))\n"
                              "threading.Thread(target=late).start()\nsys.exit(0)\n",
    "a file never closed": "LOG = open(OUT, 'w')\nLOG.write('flushed at exit')\nsys.exit(0)\n",
    "an exit handler": "import atexit\natexit.register(lambda: open(OUT, 'w').write('ran'))\nsys.exit(4)\n",
    "killed": "os.kill(os.getpid(), signal.SIGKILL)\n",
    "an exit code past an int": "sys.exit(1 << 40)\n",
    "an uncaught error": "sys.excepthook = lambda *_: open(OUT, 'w').write('hook')\nraise ValueError('own')\n",
    "its stdout": "open(OUT, 'w').write(str(sys.stdout.seekable()))\nsys.exit(0)\n",
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_a_task_ends_as_a_fresh_process_of_it_would(ending, tmp_path):
    module = tmp_path / "task.py"
    results = {}
    with warm_tasks.task_processes(preload=PRELOAD) as zygote:
        assert zygote.wait_ready()
        for way, python in (("fresh", [*AS_A_TASK, sys.executable]), ("warm", [*AS_A_TASK, *zygote.command])):
            out = tmp_path / f"{way}.out"
            module.write_text(f"import os, signal, sys\nOUT = {str(out)!r}\n" + ENDINGS[ending])
            ran = subprocess.run([*python, "-m", "kfp.dsl.executor_main", "--component_module_path", str(module),
                                  "--function_to_execute", "f"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            results[way] = ran.returncode, out.read_text() if out.exists() else None
        summary = zygote.stop()
    assert results["warm"] == results["fresh"]
    assert "1 started from the warm process" in summary and "fresh" not in summary


def test_forks_draw_their_own_random_numbers_and_a_signal_to_the_client_reaches_the_task(tmp_path):
    draws = tmp_path / "draws.py"
    draws.write_text(f"import numpy, random\nopen({str(tmp_path / 'draws')!r}, 'a').write("
                     "f'{numpy.random.rand()} {random.random()}\\n')\n")
    handled = tmp_path / "handled"
    usr1 = tmp_path / "usr1.py"
    usr1.write_text("import signal, sys, time\n"
                    f"signal.signal(signal.SIGUSR1, lambda *_: open({str(handled)!r}, 'w').close())\n"
                    f"open({str(tmp_path / 'pid')!r}, 'w').write('ready')\n"
                    "for _ in range(300):\n    time.sleep(0.05)\n"
                    f"    if __import__('os').path.exists({str(handled)!r}): sys.exit(0)\n"
                    "sys.exit(9)\n")
    with warm_tasks.task_processes(preload=(*PRELOAD, "numpy")) as zygote:
        assert zygote.wait_ready()
        task = [*AS_A_TASK, *zygote.command, "-m", "kfp.dsl.executor_main", "--function_to_execute", "f",
                "--component_module_path"]
        for _ in range(3):
            subprocess.run([*task, str(draws)], capture_output=True)
        waiting = subprocess.Popen([*task, str(usr1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(tmp_path / "pid", number=False)
        waiting.send_signal(signal.SIGUSR1)  # to the task's process as ps shows it: the client
        assert waiting.wait(timeout=30) == 0 and handled.exists()
        zygote.stop()
    lines = (tmp_path / "draws").read_text().splitlines()
    assert len(lines) == 3 and len({line.split()[0] for line in lines}) == 3, lines  # numpy's global generator
    assert len({line.split()[1] for line in lines}) == 3, lines


def test_a_zygote_whose_folder_went_says_so_in_its_line(kfp_local):
    import shutil

    with warm_tasks.task_processes(preload=PRELOAD) as zygote:
        assert zygote.wait_ready()
        shutil.rmtree(zygote.folder)  # a /tmp cleaner
        assert _where(WHERE().output)["parent"] != zygote.process.pid  # its socket went too: a fresh process
        summary = zygote.stop()
    assert summary.startswith("kfp.local tasks: the warm process's record is gone (No such file or directory")


def test_a_zygote_whose_preload_fails_serves_no_task_and_says_which_import_failed(kfp_local):
    missing = "tests.orchestration.engines.no_such_module"
    with warm_tasks.task_processes(preload=(*PRELOAD, missing)) as zygote:
        assert not zygote.wait_ready()  # it left without listening
        assert _where(WHERE().output)["parent"] != zygote.process.pid
        summary = zygote.stop()
    assert summary == f"kfp.local tasks: every one in a fresh process (no warm process: importing {missing} failed: " \
                      f"ModuleNotFoundError: No module named 'tests.orchestration.engines.no_such_module')\n"


def test_a_zygote_that_exits_as_it_imports_leaves_its_line_in_the_run_log(kfp_local, tmp_path, monkeypatch):
    (tmp_path / "exits_as_it_loads.py").write_text("import os\nos._exit(3)\n")  # no exception to catch: a crash
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    with warm_tasks.task_processes(preload=(*PRELOAD, "exits_as_it_loads")) as zygote:
        assert not zygote.wait_ready()
        assert _where(WHERE().output)["parent"] != zygote.process.pid
        summary = zygote.stop()
    assert summary == "kfp.local tasks: every one in a fresh process (the warm process left with code 3 before " \
                      "serving)\n"


def logging_state() -> str:
    import logging

    streams = [getattr(getattr(handler, "stream", None), "name", "") for handler in logging.getLogger().handlers]
    return f"{logging.getLogger().level} {streams}"


LOGGING_STATE = dsl.component(logging_state, base_image="python:3.11", install_kfp_package=False)


def test_a_library_that_logs_as_the_zygote_loads_it_leaves_a_tasks_logging_as_a_fresh_processs(kfp_local):
    with warm_tasks.task_processes(preload=(*PRELOAD, "tests.orchestration.engines.logs_as_it_loads")) as zygote:
        assert zygote.wait_ready()
        warm = LOGGING_STATE().output
        os.environ["CATS_VS_DOGS_TEST_VARIABLE"] = "a fresh process for this one"
        try:
            fresh = LOGGING_STATE().output
        finally:
            del os.environ["CATS_VS_DOGS_TEST_VARIABLE"]
        summary = zygote.stop()
    assert "1 started from the warm process, 1 in a fresh process" in summary
    assert warm == fresh == "20 ['<stdout>']", "kfp's executor logs INFO to stdout"


def test_a_request_the_zygote_cannot_read_is_answered_fresh_and_it_serves_on(kfp_local):
    import json
    import socket

    with warm_tasks.task_processes(preload=PRELOAD) as zygote:
        assert zygote.wait_ready()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(zygote.socket)
            conn.sendall((100).to_bytes(8, "big") + b"{not json")  # no streams, and less than it says
            conn.shutdown(socket.SHUT_WR)
            assert json.loads(conn.makefile("rb").readline()) == {"fresh": "an unreadable request"}
        assert _where(WHERE().output)["parent"] == zygote.process.pid
        summary = zygote.stop()
    assert "1 started from the warm process, 1 in a fresh process (an unreadable request: " in summary


def test_a_zygote_still_importing_is_stopped_at_once(tmp_path, monkeypatch):
    import time

    (tmp_path / "slow_to_import.py").write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    started = time.monotonic()
    with warm_tasks.task_processes(preload=("slow_to_import",)) as zygote:
        pass
    assert time.monotonic() - started < 10 and zygote.process.returncode is not None
    assert not os.path.exists(zygote.folder)
