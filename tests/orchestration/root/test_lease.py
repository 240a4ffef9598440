"""The root's lease: one run per root, stale leases taken over, only the holder releases."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from orchestration.root import lease, lease_storage
from tests.helpers import ROOT, file_size_limited


def test_a_second_run_is_refused_with_the_holder_named_and_the_lease_untouched(tmp_path):
    first = lease.acquire(tmp_path, "run-a")
    before = (tmp_path / lease.LEASE_FILE).read_text()
    with pytest.raises(lease.RootBusyError, match=r"in progress \(run run-a, on .* since .*\); lock file"):
        lease.acquire(tmp_path, "run-b")
    assert (tmp_path / lease.LEASE_FILE).read_text() == before
    assert lease.read(tmp_path) == first


def test_the_same_run_takes_it_again_and_only_the_holder_releases_it(tmp_path):
    first = lease.acquire(tmp_path, "run-a")
    time.sleep(0.01)
    again = lease.acquire(tmp_path, "run-a")  # a retried task of the same run
    assert again.since == first.since and again.heartbeat > first.heartbeat
    assert lease.release(tmp_path, "run-b") is False and lease.read(tmp_path).run_id == "run-a"
    assert lease.release(tmp_path, "run-a") is True and lease.read(tmp_path) is None
    assert lease.acquire(tmp_path, "run-b").run_id == "run-b"


def test_a_lease_without_heartbeat_is_taken_over_and_says_whose(tmp_path):
    lease.acquire(tmp_path, "dead-run")
    with pytest.raises(lease.RootBusyError):
        lease.acquire(tmp_path, "run-b", stale_after=60)
    taken = lease.acquire(tmp_path, "run-b", stale_after=0)
    assert taken.took_over["run_id"] == "dead-run" and "no heartbeat" in taken.took_over["why"]
    with pytest.raises(lease.LeaseLostError, match="lost the pipeline root .* to run run-b"):
        lease.refresh(tmp_path, "dead-run")
    assert lease.refresh(tmp_path, "run-b").heartbeat >= taken.heartbeat


def test_a_killed_local_process_leaves_a_lease_the_next_run_takes_at_once(tmp_path):
    script = ("import os, sys; from orchestration.root import lease; "
              "lease.acquire(sys.argv[1], 'killed-run', process=True); os._exit(9)")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=False, cwd=os.getcwd())
    held = json.loads((tmp_path / lease.LEASE_FILE).read_text())
    assert held["run_id"] == "killed-run" and held["pid"]
    taken = lease.acquire(tmp_path, "next-run", process=True)
    assert taken.took_over["run_id"] == "killed-run" and "no longer runs" in taken.took_over["why"]


def test_a_live_process_lease_is_not_taken_over(tmp_path):
    lease.acquire(tmp_path, "this-process", process=True)
    with pytest.raises(lease.RootBusyError, match=f"pid {os.getpid()}"):
        lease.acquire(tmp_path, "other", process=True)


def test_an_unreadable_old_lock_file_holds_nothing(tmp_path):
    (tmp_path / lease.LEASE_FILE).write_text("pid 12 on somewhere since 2025-01-01 00:00:00")
    assert lease.acquire(tmp_path, "run-a").took_over["run_id"] == "unknown"


def _race(root, run_id, start, results):
    start.wait()
    try:
        lease.acquire(root, run_id)
        results.put(("won", run_id))
    except lease.RootBusyError:
        results.put(("refused", run_id))


def test_of_runs_started_at_once_exactly_one_takes_the_root(tmp_path):
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    racers = [context.Process(target=_race, args=(str(tmp_path), f"run-{n}", start, results)) for n in range(6)]
    for racer in racers:
        racer.start()
    start.set()
    outcomes = [results.get(timeout=60) for _ in racers]
    for racer in racers:
        racer.join(timeout=60)
    winners = [run for outcome, run in outcomes if outcome == "won"]
    assert len(winners) == 1 and lease.read(tmp_path).run_id == winners[0]


def test_two_takers_of_one_stale_lease_never_both_win(tmp_path, monkeypatch):
    """Both takers read the stale lease before either writes (each waits for the other after its first read),
    and both judge it stale: only the conditional replace keeps the second from taking it too."""
    lease.acquire(tmp_path, "dead-run")
    path = tmp_path / lease.LEASE_FILE
    path.write_text(json.dumps(json.loads(path.read_text()) | {"heartbeat": time.time() - 7200}))
    context = multiprocessing.get_context("fork")
    both_read, results = context.Barrier(2), context.Queue()
    read = lease_storage.LocalFile.read
    first_read = []

    def read_then_wait(self):
        found = read(self)
        if not first_read:
            first_read.append(found)
            both_read.wait(timeout=30)
        return found

    monkeypatch.setattr(lease_storage.LocalFile, "read", read_then_wait)

    def take(run_id):
        try:
            lease.acquire(str(tmp_path), run_id, stale_after=3600)
            results.put(run_id)
        except lease.RootBusyError:
            results.put(None)

    racers = [context.Process(target=take, args=(run_id,)) for run_id in ("a", "b")]
    for racer in racers:
        racer.start()
    outcomes = [results.get(timeout=60) for _ in racers]
    monkeypatch.undo()
    winners = [run for run in outcomes if run]
    assert len(winners) == 1 and outcomes.count(None) == 1, outcomes
    held = lease.read(tmp_path)
    assert held.run_id == winners[0] and held.took_over["run_id"] == "dead-run"


def test_the_heartbeat_keeps_the_lease_fresh_and_reports_a_loss(tmp_path):
    lease.acquire(tmp_path, "run-a")
    first = lease.read(tmp_path).heartbeat
    # each block waits for the beat's thread, not a fixed time: on a loaded machine it may first run late
    deadline = time.monotonic() + 30
    with lease.heartbeat(tmp_path, "run-a", every=0.05):
        while lease.read(tmp_path).heartbeat <= first and time.monotonic() < deadline:
            time.sleep(0.01)
    assert lease.read(tmp_path).heartbeat > first
    with pytest.raises(lease.LeaseLostError):
        with lease.heartbeat(tmp_path, "run-a", every=0.05):
            lease.acquire(tmp_path, "run-b", stale_after=0)
            while _beating() and time.monotonic() < deadline:  # the beat that finds the lease lost ends its thread
                time.sleep(0.01)
    assert lease.read(tmp_path).run_id == "run-b"


def _beating() -> bool:
    return any(thread.name == "lease-heartbeat" for thread in threading.enumerate())


class _Overriding:
    """A module as lease.py sees it, with some of its functions replaced."""

    def __init__(self, module, **replaced):
        self._module, self._replaced = module, replaced

    def __getattr__(self, name):
        return self._replaced.get(name) or getattr(self._module, name)


def test_two_takers_with_the_same_pid_and_host_name_never_both_win(tmp_path):
    """Pods have pid namespaces of their own: the same task runs as the same pid in every pod. Faked here at the
    boundary (os.getpid, the host name) in two processes, round after round."""
    context = multiprocessing.get_context("fork")
    for round_ in range(15):
        root = tmp_path / str(round_)
        root.mkdir()
        start, results = context.Event(), context.Queue()

        def take(run_id):
            lease.os = _Overriding(os, getpid=lambda: 7)
            lease.socket = _Overriding(socket, gethostname=lambda: "cats-vs-dogs-ingest")
            start.wait()
            try:
                lease.acquire(str(root), run_id)
                results.put(("won", run_id))
            except lease.RootBusyError as error:
                results.put(("refused", str(error)))
            except Exception as error:  # what the pid-named temporary file gave: FileNotFoundError
                results.put(("crashed", repr(error)))

        racers = [context.Process(target=take, args=(run_id,)) for run_id in ("pod-a", "pod-b")]
        for racer in racers:
            racer.start()
        start.set()
        outcomes = sorted(results.get(timeout=60) for _ in racers)
        for racer in racers:
            racer.join(timeout=10)
        assert [kind for kind, _ in outcomes] == ["refused", "won"], (round_, outcomes)
        assert lease.read(root).run_id == outcomes[1][1]
        assert "\n" not in outcomes[0][1] and "another run of this pipeline is in progress" in outcomes[0][1]
        assert sorted(p.name for p in root.iterdir()) == [lease.LEASE_FILE], "no temporary file left behind"


class _Flaky:
    """A lease storage whose reads fail `failures` times (a storage hiccup), then work."""

    def __init__(self, real, failures):
        self.real, self.failures = real, failures

    def read(self):
        if self.failures:
            self.failures -= 1
            raise OSError("Transient error: 503 Service Unavailable")
        return self.real.read()

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_storage_hiccup_while_renewing_is_retried_and_a_lasting_one_named_apart_from_a_lost_lease(tmp_path,
                                                                                                   monkeypatch):
    lease.acquire(tmp_path, "run-a")
    real = lease._storage
    flaky = {}
    monkeypatch.setattr(lease, "_storage", lambda path: flaky.setdefault("s", _Flaky(real(path), 2)))
    assert lease.refresh(tmp_path, "run-a", backoff=0).run_id == "run-a"
    flaky["s"] = _Flaky(real(lease.lease_path(tmp_path)), 10)
    with pytest.raises(lease.LeaseUnreachableError) as error:
        lease.refresh(tmp_path, "run-a", tries=3, backoff=0)
    assert str(error.value) == (f"cannot renew the lease {lease.lease_path(tmp_path)} of run run-a: OSError: "
                                "Transient error: 503 Service Unavailable (3 tries)")
    assert not isinstance(error.value, lease.LeaseLostError), "KFP's retry must not see it as the node's failure"


def test_a_lease_the_disk_cannot_take_is_one_line_and_leaves_no_temporary_file(tmp_path):
    """A file size limit makes the lease's write fail as a full disk does (EFBIG instead of ENOSPC), for any user."""
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))\n"
              "from orchestration.root import lease\n"
              "try:\n"
              f"    lease.acquire({str(tmp_path)!r}, 'run-a')\n"
              "except lease.LeaseUnreachableError as error:\n"
              "    print(error)\n"
              "    sys.exit(3)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            cwd=_REPO, env=file_size_limited())
    assert result.returncode == 3, result.stderr[-2000:]
    line = result.stdout.strip()
    assert "\n" not in line and line.startswith(f"cannot take the lease {tmp_path / lease.LEASE_FILE}: OSError:"), line
    assert "File too large" in line
    assert os.listdir(tmp_path) == [], "no lease and no stray temporary file"


def test_a_gs_root_without_credentials_is_named_with_the_way_out(monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-key.json"))
    with pytest.raises(lease.LeaseUnreachableError) as raised:
        lease.acquire("gs://cats-bucket/root", "run-a")
    line = str(raised.value)
    assert "\n" not in line and line.startswith("cannot take the lease gs://cats-bucket/root/.pipeline.lock: "
                                                "DefaultCredentialsError"), line
    assert "GOOGLE_APPLICATION_CREDENTIALS" in line and "gcloud auth application-default login" in line


def _dead_pid() -> int:
    """The pid of a process that has ended (its number is not reused this soon: pids count up)."""
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    return int(ended.stdout)


def _recorded(tmp_path, **fields):
    """Writes a lease held by a local process (`fields` override what this process would record)."""
    boot_id, namespace = lease._process_home()
    held = lease.Lease(run_id="holder", host=socket.gethostname(), since=time.time(), heartbeat=time.time(),
                       pid=_dead_pid(), boot_id=boot_id, pid_namespace=namespace)
    (tmp_path / lease.LEASE_FILE).write_text(json.dumps(json.loads(held.to_text()) | fields))


@pytest.mark.parametrize("elsewhere", [{"pid_namespace": "pid:[1]"}, {"boot_id": "another-boot"},
                                       {"boot_id": None, "pid_namespace": None}],
                         ids=["another pid namespace", "another boot", "written before they were recorded"])
def test_a_process_lease_from_where_its_pid_means_another_process_waits_for_its_heartbeat(tmp_path, elsewhere):
    _recorded(tmp_path, **elsewhere)
    with pytest.raises(lease.RootBusyError, match="in progress"):
        lease.acquire(tmp_path, "run-b", process=True)
    assert lease.read(tmp_path).run_id == "holder"
    assert "no heartbeat" in lease.acquire(tmp_path, "run-b", process=True, stale_after=0).took_over["why"]


def test_a_process_lease_from_this_namespace_whose_process_ended_is_taken_over_at_once(tmp_path):
    _recorded(tmp_path)
    assert lease.acquire(tmp_path, "run-b", process=True).took_over["why"].endswith("no longer runs")


def _unshare() -> list[str]:
    """The command that runs a program in a pid namespace of its own with its own /proc (as root, or as a user
    mapped to root in a user namespace of its own); skips the test where neither is permitted."""
    for command in (["unshare", "--pid", "--fork", "--mount-proc"],
                    ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"]):
        try:
            if subprocess.run([*command, "true"], capture_output=True, timeout=30).returncode == 0:
                return command
        except (OSError, subprocess.TimeoutExpired):
            break
    pytest.skip("unshare cannot make a pid namespace here")


_REPO = str(ROOT)
_HOLD = ("import os, sys\n"
         "from orchestration.root import lease\n"
         "print(lease.acquire(sys.argv[1], 'run-a', process=True).to_text(), flush=True)\n"
         "sys.stdin.read()\n"
         "os._exit(0)\n")  # dies holding it: no release


def test_a_live_lease_held_in_another_pid_namespace_is_not_taken_over_nor_once_its_holder_died(tmp_path):
    """The probe: run A holds the lease inside `unshare --pid` on the same host; run B outside must not take it
    while A runs (A's pid means another process out here, or none), nor after A died (B cannot tell)."""
    holder = subprocess.Popen([*_unshare(), sys.executable, "-c", _HOLD, str(tmp_path)], cwd=_REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        held = lease.Lease.from_text(holder.stdout.readline())
        assert held.run_id == "run-a" and held.pid_namespace != lease._process_home()[1], held
        assert held.host == socket.gethostname() and held.boot_id == lease._process_home()[0]
        with pytest.raises(lease.RootBusyError, match=f"run run-a, pid {held.pid} on"):
            lease.acquire(tmp_path, "run-b", process=True)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    with pytest.raises(lease.RootBusyError):
        lease.acquire(tmp_path, "run-b", process=True)
    assert lease.read(tmp_path) == held
    taken = lease.acquire(tmp_path, "run-b", process=True, stale_after=0)
    assert taken.took_over["run_id"] == "run-a" and "no heartbeat" in taken.took_over["why"]


def test_a_dead_holder_in_the_same_pid_namespace_is_still_taken_over_at_once(tmp_path):
    script = ("import os, sys\n"
              "from orchestration.root import lease\n"
              "if sys.argv[2] == 'hold':\n"
              "    lease.acquire(sys.argv[1], 'killed-run', process=True)\n"
              "    os._exit(9)\n"
              "print(lease.acquire(sys.argv[1], 'next-run', process=True).took_over['why'])\n")
    both = (f"{sys.executable} -c \"$0\" \"$1\" hold; {sys.executable} -c \"$0\" \"$1\" take")
    result = subprocess.run([*_unshare(), "sh", "-c", both, script, str(tmp_path)], cwd=_REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("no longer runs"), result.stdout
    assert lease.read(tmp_path).run_id == "next-run"


def test_a_start_time_is_read_only_from_a_proc_that_numbers_processes_as_the_caller_does(tmp_path):
    """In a pid namespace without its own /proc mount, /proc/<pid> is the host's process of that number: a start
    time read there would change under a live holder and make it look dead."""
    script = "import os; from orchestration.root import lease; print(lease._process_started(os.getpid()))"
    started = {}
    for own_proc in (True, False):
        command = _unshare() if own_proc else [part for part in _unshare() if part != "--mount-proc"]
        result = subprocess.run([*command, sys.executable, "-c", script], cwd=_REPO, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr[-2000:]
        started[own_proc] = result.stdout.strip()
    assert started[True].isdigit() and started[False] == "None", started
