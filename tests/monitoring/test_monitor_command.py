"""`monitor`'s refusals, each one line with exit code 2 before anything is written, and its schedule beside the
run's."""

import argparse
import json
import os
import sqlite3
import subprocess
import sys

import pytest

import pipeline_runner
from cli import monitor as monitor_cli
from contract import traffic
from orchestration.engines import local_schedule
from orchestration.root import marker, run_lock
from tests.helpers import ROOT


def _monitor(capsys, *args):
    code = pipeline_runner.main(["monitor", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_folder_of_the_users_is_refused_and_left_alone(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, out, err = _monitor(capsys, "--output-dir", str(tmp_path))
    assert code == 2 and out == "" and err.count("\n") == 1 and "notes.txt" in err
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_a_folder_where_nothing_ever_ran_is_refused(tmp_path, capsys):
    code, _, err = _monitor(capsys, "--output-dir", str(tmp_path / "absent"))
    assert code == 2 and "is not a pipeline root (nothing was ever run there)" in err and err.count("\n") == 1
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize("as_json", [False, True])
def test_a_root_where_no_model_was_pushed_yet_has_nothing_to_check_yet_and_writes_nothing(tmp_path, capsys, as_json):
    """Its first runs' models were not blessed: a scheduled check says so and succeeds, every hour until a push."""
    marker.claim(tmp_path, marker.inspect(tmp_path))
    code, out, err = _monitor(capsys, "--output-dir", str(tmp_path), *(["--json"] if as_json else []))
    line = f"nothing to check yet: nothing is served under {tmp_path / 'serving_model'}: no model has been pushed " \
           "there yet"
    assert (code, err) == (0, "")
    assert json.loads(out) == {"checked": False, "drift": None, "verdict": line} if as_json else out == line + "\n"
    from orchestration.root import lease

    assert set(os.listdir(tmp_path)) <= {".cats-vs-dogs-root", lease.LEASE_FILE + ".guard"}  # the lease's own


def test_a_root_whose_pushed_versions_are_all_gone_is_refused_naming_them(tmp_path, capsys):
    """Not the "nothing pushed yet" of a new root: its store records versions 1 and 2, and their folders were
    deleted."""
    from ml_metadata.proto import metadata_store_pb2

    from contract import metadata as metadata_lib
    from orchestration.run import reconcile

    marker.claim(tmp_path, marker.inspect(tmp_path))
    store = metadata_lib.open_store(metadata_lib.sqlite_store(tmp_path / "metadata.sqlite"))
    model_type = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="Model"))
    store.put_contexts([metadata_store_pb2.Context(
        type_id=store.put_context_type(metadata_store_pb2.ContextType(name="pipeline")), name="cats-vs-dogs")])
    for version in (1, 2):
        [model] = store.put_artifacts([metadata_store_pb2.Artifact(type_id=model_type, uri=f"/m/{version}")])
        reconcile.record_push(store, "cats-vs-dogs", "ServingPusher", model, version,
                              str(tmp_path / "serving_model" / str(version)), {})
    code, out, err = _monitor(capsys, "--output-dir", str(tmp_path))
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert f"nothing is served under {tmp_path / 'serving_model'} (versions 1, 2 pushed, none of them there now): " \
           "there is no model to monitor" in err


def test_a_folder_the_schedules_line_made_before_its_first_run_has_nothing_to_check_yet(tmp_path, capsys):
    """The hourly check's line makes the folder for its log: until the nightly run makes it a root, the check
    succeeds saying so; a folder without that log is still refused (a mistyped --output-dir)."""
    from contract.layout import RunLayout

    root = tmp_path / "scheduled"
    root.mkdir()
    RunLayout(root).schedule_log.write_text("=== monitor Sun Nov 29 03:30:00 UTC 2026 ===\n")
    code, out, err = _monitor(capsys, "--output-dir", str(root))
    assert (code, err) == (0, "")
    assert out == f"nothing to check yet: nothing has run at {root} yet (its schedule's log is there, and no run " \
                  "in it): a check needs the model a run pushes\n"
    assert os.listdir(root) == [RunLayout(root).schedule_log.name]
    # A log with a run in it, in a folder that is no root: the root moved, or its disk is not mounted
    with open(RunLayout(root).schedule_log, "a") as log:
        log.write("=== run Sun Nov 29 03:00:00 UTC 2026 ===\n")
    code, out, err = _monitor(capsys, "--output-dir", str(root))
    assert code == 2 and "is not a pipeline root (nothing was ever run there)" in err
    RunLayout(root).schedule_log.unlink()
    code, out, err = _monitor(capsys, "--output-dir", str(root))
    assert code == 2 and "is not a pipeline root (nothing was ever run there)" in err


def test_a_root_that_ran_whose_store_and_served_versions_are_gone_is_refused(tmp_path, capsys):
    """Whether it ever pushed cannot be told: not "nothing pushed yet"."""
    marker.claim(tmp_path, marker.inspect(tmp_path))
    (tmp_path / "runs" / "2026-11-29T03_00_00").mkdir(parents=True)
    code, out, err = _monitor(capsys, "--output-dir", str(tmp_path))
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert f"and the root's ML Metadata store {tmp_path / 'metadata.sqlite'} is gone" in err


@pytest.mark.parametrize("part", ["monitoring", "labeling", "traffic"])
def test_a_place_of_the_root_that_is_a_link_is_refused_and_what_it_points_at_left_alone(tmp_path, capsys, part):
    """Drift reports, queues and traffic are the root's own: a link to a folder of the user's is never written
    or read through."""
    root, users = tmp_path / "root", tmp_path / "users"
    users.mkdir()
    root.mkdir()
    (users / "notes.txt").write_text("mine")
    marker.claim(root, marker.inspect(root))
    (root / part).symlink_to(users)
    code, out, err = _monitor(capsys, "--output-dir", str(root))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"{root / part} is a symbolic link (to {users})" in err
    assert os.listdir(users) == ["notes.txt"]


def test_a_check_while_a_run_holds_the_root_exits_at_once_and_writes_nothing(tmp_path, capsys):
    """A check beside a run would write the SQLite store the run writes ("database is locked" for one of them);
    it takes the root's lease as a run does."""
    marker.claim(tmp_path, marker.inspect(tmp_path))
    with run_lock.exclusive_run(tmp_path, "local-a-run"):
        before = sorted(os.listdir(tmp_path))
        code, out, err = _monitor(capsys, "--output-dir", str(tmp_path))
        assert sorted(os.listdir(tmp_path)) == before
    assert code == 3 and out == "" and err.count("\n") == 1 and "run local-a-run" in err


def test_a_check_refused_by_a_busy_root_loads_no_tensorflow(tmp_path):
    """The hourly check that meets the nightly run holding the root is refused before its libraries load (seconds
    of CPU each hour the run takes)."""
    marker.claim(tmp_path, marker.inspect(tmp_path))
    probe = ("import sys, pipeline_runner; code = pipeline_runner.main(['monitor', '--output-dir', sys.argv[1]]); "
             "print(code, 'tensorflow' in sys.modules, 'monitoring.monitor' in sys.modules)")
    with run_lock.exclusive_run(tmp_path, "local-a-run"):
        done = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
    assert done.stdout.split() == ["3", "False", "False"], done
    assert "run local-a-run" in done.stderr


def test_a_store_another_process_has_locked_is_named_busy_before_any_work(tmp_path, capsys, monkeypatch):
    """A sqlite3 shell or a backup in a transaction: the check would fail at its record, after its queue."""
    from orchestration.root import store_health

    monkeypatch.setattr(store_health, "BUSY_TIMEOUT_SECONDS", 1.0)  # what is checked is the outcome, not the wait
    marker.claim(tmp_path, marker.inspect(tmp_path))
    sqlite3.connect(tmp_path / "metadata.sqlite").close()
    hold = ("import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\nsys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path / "metadata.sqlite")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        code, out, err = _monitor(capsys, "--output-dir", str(tmp_path))
    finally:
        holder.communicate("")
    assert code == 3 and out == "" and err.count("\n") == 1 and "is busy: another process has it locked" in err


@pytest.mark.parametrize("flag, value", [("--false-alarm-rate", "1"), ("--false-alarm-rate", "x"),
                                         ("--false-alarm-rate", "0.006"), ("--false-alarm-rate", "1e-300"),
                                         ("--since", "yesterday"), ("--since", "9" * 400 + "d"),
                                         ("--since", "1000000d"), ("--since", "99999999999999d"),
                                         ("--since", "1999-12-31T23:59:59Z"), ("--since", "0001-01-01T00:00:00+01:00"),
                                         ("--window", "0"), ("--sample", "4")])
def test_settings_that_cannot_work_are_refused_by_the_parser(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_:
        pipeline_runner.main(["monitor", "--output-dir", str(tmp_path), flag, value])
    assert exit_.value.code == 2 and flag in capsys.readouterr().err


def test_since_takes_a_duration_back_from_now_or_a_utc_time():
    assert monitor_cli.since_ms("6h", now=1_800_000_000.0) == (1_800_000_000 - 6 * 3600) * 1000
    assert monitor_cli.since_ms("2026-11-24T08:00:00Z") == monitor_cli.since_ms("2026-11-24T08:00:00")
    assert monitor_cli.since_ms("2000-01-01T00:00:01+00:00") == traffic.EARLIEST_TIME_MS + 1000
    with pytest.raises(argparse.ArgumentTypeError, match="reaches back before 2000-01-01T00:00:00"):
        monitor_cli.since_ms("1000000d")


@pytest.mark.parametrize("time_ms, text", [(traffic.EARLIEST_TIME_MS, "2000-01-01T00:00:00+00:00"),
                                           (-62135600400000,  # 0001-01-01T00:00:00+01:00
                                            "-62135600400000 ms from the Unix epoch (no calendar date)"),
                                           (2**63 - 1, f"{2**63 - 1} ms from the Unix epoch (no calendar date)")])
def test_a_records_time_is_shown_as_a_date_where_a_calendar_has_one(time_ms, text):
    """Records an older sink or another tool wrote may carry any int64 (year 1 in +01:00 is year 0 in UTC)."""
    assert traffic.time_text(time_ms) == text


def test_the_monitor_entry_checks_the_roots_traffic_and_logs_beside_the_runs(tmp_path):
    line = local_schedule.monitor_line("30 * * * *", ROOT, tmp_path / "out", python="/py")
    assert line.startswith("30 * * * * ")
    assert f"/py pipeline_runner.py monitor --output-dir {tmp_path / 'out'} >> {tmp_path / 'out'}/scheduled_runs.log" \
        in line
    assert line.endswith(f"{local_schedule.MONITOR_MARK}{tmp_path / 'out'}")


def _fake_crontab(tmp_path):
    """A `crontab` that keeps its table in a file, as cron's does."""
    bin_dir, table = tmp_path / "bin", tmp_path / "table"
    bin_dir.mkdir()
    (bin_dir / "crontab").write_text(f'#!/bin/sh\nif [ "$1" = -l ]; then cat {table} 2>/dev/null || '
                                     f'{{ echo "no crontab for $(id -un)" >&2; exit 1; }}; else cat > {table}; fi\n')
    (bin_dir / "crontab").chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}", table


def test_schedule_installs_the_monitor_entry_beside_the_run_and_replaces_each_apart(tmp_path, monkeypatch, capsys):
    path, table = _fake_crontab(tmp_path)
    monkeypatch.setenv("PATH", path)
    out = tmp_path / "out"
    (tmp_path / "images").mkdir()
    for cron in ("0 3 * * *", "0 4 * * *"):
        code = pipeline_runner.main(["schedule", "--local", "--install", "--cron", cron, "--monitor-cron",
                                     "30 * * * *", "--data-dir", str(tmp_path / "images"), "--output-dir", str(out)])
        assert code == 0, capsys.readouterr().err
    entries = table.read_text().splitlines()
    assert len(entries) == 2 and entries[0].startswith("0 4 * * *") and " run --data-dir " in entries[0]
    assert entries[1].startswith("30 * * * *") and " monitor --output-dir " in entries[1]


def test_a_bad_monitor_schedule_is_refused_before_the_crontab_is_touched(tmp_path, monkeypatch, capsys):
    path, table = _fake_crontab(tmp_path)
    monkeypatch.setenv("PATH", path)
    (tmp_path / "images").mkdir()
    code = pipeline_runner.main(["schedule", "--local", "--install", "--cron", "0 3 * * *", "--monitor-cron",
                                 "hourly", "--data-dir", str(tmp_path / "images"), "--output-dir",
                                 str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "5 fields" in err and not table.exists()


def test_the_command_line_builds_monitors_flags_without_tensorflow():
    """Every command builds every command's flags at its start: monitor's must not cost them TensorFlow."""
    import subprocess
    import sys

    probe = "import sys, pipeline_runner; pipeline_runner.build_parser(); print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr[-2000:]


def test_a_window_below_the_minimum_and_a_time_to_come_are_refused_before_any_work(tmp_path, capsys):
    """Either would make every check say "nothing to check yet", exit 0, for ever: a scheduled check passing
    quietly on a typo."""
    code = pipeline_runner.main(["monitor", "--output-dir", str(tmp_path / "nowhere"), "--window", "20"])
    assert code == 2 and "--window 20 is below --min-window 30: no window could ever be checked" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        pipeline_runner.main(["monitor", "--output-dir", str(tmp_path / "nowhere"), "--since", "2999-01-01T00:00:00Z"])
    assert refused.value.code == 2 and "'2999-01-01T00:00:00Z' is in the future" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_a_traffic_span_the_window_passes_over_is_named_with_its_reason(tmp_path, capsys, demo_jpegs):
    """A span holding a link (or cut short) was left out of the window without a word."""
    from monitoring import looks

    traffic_root = tmp_path / "traffic"
    looks.write_traffic(str(traffic_root), demo_jpegs["cat"], 1, batch_size=2)  # spans 1 and 2
    [record_file] = [p for p in (traffic_root / "span-1").iterdir() if p.name.endswith(".tfrecord")]
    moved = tmp_path / "elsewhere.tfrecord"
    record_file.rename(moved)
    record_file.symlink_to(moved)
    monitor_cli._say_spans_not_read(traffic_root)
    err = capsys.readouterr().err
    assert err.startswith(f"warning: traffic {traffic_root / 'span-1'} is not read: it holds a symbolic link (")
    assert err.count("\n") == 1, "span 2 is read"
    (traffic_root / "span-2" / "traffic_report.json").write_text("{")  # damaged: the window's read names it
    monitor_cli._say_spans_not_read(traffic_root)
    assert capsys.readouterr().err == err, "no warning says span 2 is passed over: it is not"
