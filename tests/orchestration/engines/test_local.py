import pathlib
import re
import subprocess

import pytest

import pipeline_runner
from orchestration.engines import local_schedule
from orchestration.root import lease, run_lock
from tests.helpers import ROOT


def test_second_run_on_the_same_root_is_refused_at_once(tmp_path):
    with run_lock.exclusive_run(tmp_path):
        with pytest.raises(lease.RootBusyError, match=f"pid [0-9]+ on .*lock file {tmp_path}"):
            with run_lock.exclusive_run(tmp_path):
                pass
    with run_lock.exclusive_run(tmp_path):  # released after the first run
        pass


def test_cron_line_runs_the_pipeline_and_logs_in_the_output_dir(tmp_path):
    line = local_schedule.cron_line("0 3 * * *", ROOT, tmp_path / "images", tmp_path / "out", python="/py")
    assert line.startswith(f"0 3 * * * mkdir -p {tmp_path / 'out'} && cd {ROOT} && ")
    assert f"/py pipeline_runner.py run --data-dir {tmp_path / 'images'} --output-dir {tmp_path / 'out'}" in line
    assert f">> {tmp_path / 'out' / 'scheduled_runs.log'} 2>&1" in line


@pytest.mark.parametrize("kind", ["run", "monitor"])
def test_a_scheduled_command_that_fails_says_so_and_why_on_stderr_for_crons_mail_and_one_that_works_says_nothing(
        tmp_path, kind):
    python = tmp_path / "python"  # stands in for the interpreter: prints its lines and exits with the code in a file
    python.write_text('#!/bin/sh\necho "the night\'s own output"\n[ "$(cat "$0.code")" = 0 ] || '
                      'echo "error: what went wrong, night $(cat "$0.code")"\nexit "$(cat "$0.code")"\n')
    python.chmod(0o755)
    out = tmp_path / "my root \\c"  # dash's echo would stop at the \c
    line = (local_schedule.cron_line("0 3 * * *", ROOT, tmp_path / "images", out, python=str(python)) if kind == "run"
            else local_schedule.monitor_line("0 * * * *", ROOT, out, python=str(python)))
    said = {}
    for code in (1, 0, 3, 2):
        pathlib.Path(f"{python}.code").write_text(str(code))
        night = subprocess.run(["sh", "-c", local_schedule.shell_command(line)], capture_output=True, text=True,
                               cwd="/", env={"PATH": "/usr/bin:/bin"}, timeout=60)
        said[code] = (night.returncode, night.stdout, night.stderr)
    log = out / "scheduled_runs.log"
    assert said[0] == (0, "", "")
    for code in (1, 2, 3):
        if kind == "monitor" and code == 3:  # a check the nightly run refuses: no mail every hour it runs
            assert said[code] == (0, "", "")
            continue
        assert said[code] == (0, "", f"cats-vs-dogs-tfx: the scheduled {kind} exited {code}; its output is in {log}\n"
                                     f"error: what went wrong, night {code}\n"), "the night's own error, not another's"
    assert log.read_text().count("the night's own output") == 4
    # only this entry's part of the log: not an earlier night's error, nor the lines of an hourly check that wrote
    # its header into the log while the night ran
    pathlib.Path(f"{python}.code").write_text("137")
    python.write_text('#!/bin/sh\necho "error: mine"\necho "=== monitor Sun ==="\necho "error: busy"\nexit 137\n')
    night = subprocess.run(["sh", "-c", local_schedule.shell_command(line)], capture_output=True, text=True,
                           cwd="/", env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert night.stderr.splitlines()[1:] == ["error: mine"], night.stderr
    python.write_text('#!/bin/sh\nexit 137\n')  # killed before it said a word
    night = subprocess.run(["sh", "-c", local_schedule.shell_command(line)], capture_output=True, text=True,
                           cwd="/", env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert night.stderr == f"cats-vs-dogs-tfx: the scheduled {kind} exited 137; its output is in {log}\n"
    verdict = "drift: features moved; 80 images against version 1's data; queued for labels: /r/labeling/queue-1"
    pathlib.Path(f"{python}.code").write_text("0")
    python.write_text(f'#!/bin/sh\necho "{verdict}"\n')
    night = subprocess.run(["sh", "-c", local_schedule.shell_command(line)], capture_output=True, text=True,
                           cwd="/", env={"PATH": "/usr/bin:/bin"}, timeout=60)
    # a check that queued images to label is news; a night that only trained (or queued nothing) is not
    assert night.stderr == (f"cats-vs-dogs-tfx: the scheduled monitor found drift: {verdict}\n" if kind == "monitor"
                            else "")


def test_install_refuses_when_the_crontab_cannot_be_read_and_leaves_it(tmp_path, monkeypatch):
    table = tmp_path / "table"
    table.write_text("MAILTO=me@example.com\n0 1 * * * /usr/local/bin/backup\n")
    bin_dir = _fake_crontab(tmp_path, f'[ "$1" = -l ] && {{ echo "crontab: Resource temporarily unavailable" >&2; '
                                      f'exit 1; }}\ncat > {table}\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    line = local_schedule.cron_line("0 3 * * *", ROOT, tmp_path / "images", tmp_path / "out", python="/py")
    with pytest.raises(local_schedule.CronError, match=r"crontab -l could not read your crontab \(crontab: Resource "
                                                       r"temporarily unavailable\): it is unchanged"):
        local_schedule.install(line, tmp_path / "out")
    assert table.read_text() == "MAILTO=me@example.com\n0 1 * * * /usr/local/bin/backup\n"


def test_cron_schedule_needs_five_fields(tmp_path):
    with pytest.raises(ValueError, match="5 fields"):
        local_schedule.cron_line("0 0 3 * * *", ROOT, tmp_path, tmp_path)


@pytest.mark.parametrize("cron, named", [
    ("60 3 * * *", "minute field '60' has '60', outside the field's values (values 0-59"),
    ("0 24 * * *", "hour field '24'"), ("0 3 0 * *", "day of the month field '0'"), ("0 3 * 13 *", "month field"),
    ("0 3 * * 8", "day of the week field '8'"), ("*/0 * * * *", "a step '0', not a whole number above 0"),
    ("% * * * *", "'%', which is not a value, a range or *"), ("5/10 * * * *", "a step goes with * or a range"),
    ("3-1 * * * *", "the range '3-1', which ends before it starts"), ("0 3 * * fri-mon", "ends before it starts"),
    ("0 3 * * ²", "'²', which is not a value"),
])
def test_a_schedule_cron_would_refuse_is_refused_naming_its_field(tmp_path, cron, named):
    with pytest.raises(local_schedule.CronError, match=re.escape(named)):
        local_schedule.cron_line(cron, ROOT, tmp_path / "images", tmp_path / "out")


@pytest.mark.parametrize("cron", ["0 3 * * *", "*/15 1-5 1,15 * 1-5", "0 0 * * 7", "0 3 * feb SUN", "1-30/7 * * * *",
                                  "0 3 * * mon-fri", "0 3 * jan-mar mon,wed,fri", "0 3 * * 1-5,sat"])
def test_schedules_cron_takes_are_taken(tmp_path, cron):
    assert local_schedule.cron_line(cron, ROOT, tmp_path / "images", tmp_path / "out").startswith(cron + " ")


@pytest.mark.parametrize("log", ["folder", "dangling link"])
def test_a_log_crons_shell_could_not_append_to_is_refused_before_anything_is_scheduled(tmp_path, log):
    out = tmp_path / "out"
    path = out / "scheduled_runs.log"
    out.mkdir()
    if log == "folder":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "gone")
    with pytest.raises(local_schedule.CronError, match=f"the schedule's log {re.escape(str(path))} is not "):
        local_schedule.cron_line("0 3 * * *", ROOT, tmp_path / "images", out)


@pytest.mark.parametrize("which", ["data", "output"])
def test_a_path_with_a_newline_never_becomes_a_second_crontab_entry(tmp_path, which):
    hostile = tmp_path / "p\n* * * * * touch /tmp/PWNED #"
    dirs = {"data": tmp_path / "images", "output": tmp_path / "out", which: hostile}
    with pytest.raises(local_schedule.CronError, match="contains a control character \\('\\\\n'\\)"):
        local_schedule.cron_line("0 3 * * *", ROOT, dirs["data"], dirs["output"], python="/py")


def test_the_entrys_marker_is_quoted_and_replaces_the_entry_of_the_same_output_dir(tmp_path):
    out = tmp_path / "my runs; rm -rf ~"
    line = local_schedule.cron_line("0 3 * * *", ROOT, tmp_path / "images", out, python="/py")
    assert line.endswith(f"# cats-vs-dogs-tfx:'{out}'") and line.count("\n") == 0


def _fake_crontab(tmp_path, script: str) -> str:
    """A PATH with a `crontab` of our own (a script), or with none at all."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if script:
        (bin_dir / "crontab").write_text("#!/bin/sh\n" + script)
        (bin_dir / "crontab").chmod(0o755)
    return str(bin_dir)


@pytest.mark.parametrize("script, expected", [
    ("", "no crontab command on this machine"),
    ('[ "$1" = -l ] && { echo "no crontab for root" >&2; exit 1; }\n'
     'echo "\\"-\\":2: bad minute" >&2\necho "errors in crontab file" >&2\nexit 1\n',
     'crontab refused the new table ("-":2: bad minute): your crontab is unchanged'),
])
def test_schedule_install_without_a_working_crontab_is_one_line(tmp_path, monkeypatch, capsys, script, expected):
    monkeypatch.setenv("PATH", _fake_crontab(tmp_path, script))
    (tmp_path / "images").mkdir()
    code = pipeline_runner.main(["schedule", "--local", "--install", "--cron", "0 3 * * *", "--data-dir",
                                 str(tmp_path / "images"), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and expected in err and "Traceback" not in err, err


def test_the_served_model_is_traced_through_rollbacks_of_rollbacks_to_the_version_a_run_pushed(tmp_path):
    import json

    from contract import layout, served
    from contract.layout import RunLayout
    from orchestration.engines import local

    where = RunLayout(tmp_path)
    records = {1: {}, 2: {}, 3: {"rolled_back_to": 1}, 4: {"rolled_back_to": 3}, 5: {"rolled_back_to": True},
               6: {"rolled_back_to": 7}, 7: {"rolled_back_to": 6}}
    for version, record in records.items():
        path = pathlib.Path(where.serving_dir, str(version), layout.PUSH_RECORD_FILE)
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"model_uri": f"m{version}", **record}))
    # 5: true is no version; 6 and 7, damaged records naming each other: the search ends
    for version, expected in ((2, None), (3, 1), (4, 1), (5, None), (6, 7)):
        served.write_config(str(where.serving_dir), served.ServingConfig("cats-vs-dogs", "/x", version))
        assert local._served_versions(where) == (version, expected), version


def test_an_output_dir_holding_glob_characters_is_refused_before_any_work(tmp_path, capsys):
    for name in ("price$5", "a[b]", "what?"):
        code = pipeline_runner.main(["run", "--demo", "--output-dir", str(tmp_path / name)])
        said = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(said) == 1 and "glob patterns" in said[0], said
        assert not (tmp_path / name).exists()


def test_a_cron_entry_whose_path_holds_a_backslash_before_a_percent_is_refused(tmp_path):
    with pytest.raises(local_schedule.CronError, match="backslash before a %"):
        local_schedule.cron_line("0 3 * * *", ROOT, tmp_path / "images", tmp_path / "o\\%x", python="/py")


def test_a_resolver_whose_resolution_fails_stops_the_run_and_a_ctrl_c_as_it_writes_its_summary_waits_for_it(
        tmp_path, monkeypatch):
    """TFX's resolver handler records a failed resolution and returns, and LocalDagRunner would go on: the Trainer
    without the newest search's result, the Evaluator without its baseline, then the push. The run stops there.

    Then a Ctrl-C (a second one pressed a moment after the first, say) lands while the stopped run writes what it
    did: real SIGINTs during the summary's writing and the report's copy to the root leave both whole; the run's
    own exit code stands, and a line says the Ctrl-C came. One run checks both: each costs a run's start."""
    import json
    import os
    import signal
    import time

    from components import tuner
    from contract import layout
    from contract import metadata as node_ids
    from contract.errors import FAILED
    from orchestration.run import lifecycle
    from reporting import run_index
    from tests.helpers import latest_run_states

    def fails(self, store, input_dict):
        raise RuntimeError("the store answered nonsense")

    def ctrl_c_then(function):
        def interrupted(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the handler runs here, before the step it interrupts
            return function(*args, **kwargs)
        return interrupted

    monkeypatch.setattr(tuner.NewestStrategy, "resolve_artifacts", fails)
    monkeypatch.setattr(lifecycle, "after_the_dag", ctrl_c_then(lifecycle.after_the_dag))
    monkeypatch.setattr(run_index, "publish", ctrl_c_then(run_index.publish))
    result, summary, _ = _tiny_run_as_in_a_terminal(tmp_path)
    assert result.returncode == FAILED, result.stderr[-3000:]  # the run's own outcome, written whole
    assert summary["error"] == (f"NodeFailedError: {node_ids.HYPERPARAMETERS_RESOLVER} could not resolve its inputs: "
                                "RuntimeError: the store answered nonsense"), summary["error"]
    states, _, _ = latest_run_states(tmp_path / "out" / "metadata.sqlite")
    assert node_ids.EXAMPLE_GEN in states and node_ids.TRAINER not in states and node_ids.EVALUATOR not in states
    assert not (tmp_path / "out" / "serving_model").exists() or not any(
        p.name.isdigit() for p in (tmp_path / "out" / "serving_model").iterdir())
    (folder,) = pathlib.Path(layout.RunLayout(tmp_path / "out").runs_dir).iterdir()
    assert json.loads((folder / layout.SUMMARY_FILE).read_text()) == summary  # the root's is the run's, whole
    page = tmp_path / "out" / layout.REPORT_DIR / layout.REPORT_PAGE
    assert folder.name in page.read_text(), "the root's report lists the run"
    with run_lock.exclusive_run(tmp_path / "out"):  # released
        pass
    assert result.stdout.count("Ctrl-C (or SIGTERM): it came while the run wrote its summary and report, which "
                               "were written first; the run had failed by then") == 1


def test_sigterm_stops_a_run_as_a_ctrl_c_does_and_a_store_locked_as_it_stops_is_one_line_with_130(tmp_path,
                                                                                                   monkeypatch):
    """`timeout`, systemd and a container's stop send SIGTERM: the run stops as for a Ctrl-C, not killed outright.
    As it marks what ran CANCELED, another program holds metadata.sqlite locked through ML Metadata's retries: one
    line naming the store, exit 130, no traceback; the root's lock is released and SIGTERM's handler restored. One
    run checks both: each costs a run's start."""
    import os
    import signal
    import time

    from components import tuner
    from contract.errors import INTERRUPTED
    from ingest import synthetic
    from orchestration.root import store_health
    from tests.helpers import TINY, run_cli

    def stopped(self, store, input_dict):  # a real SIGTERM, early in the run (cheap)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # its handler runs here
        raise AssertionError("SIGTERM did not stop the run")

    canceled = []

    def locked(*args):  # what ML Metadata raises once its retries on a locked SQLite file are spent
        canceled.append(args)  # reached only by a run that was interrupted
        raise RuntimeError("Concurrent writes aborted after max number of retries.")

    monkeypatch.setattr(tuner.NewestStrategy, "resolve_artifacts", stopped)
    monkeypatch.setattr(store_health, "cancel_unfinished", locked)
    synthetic.write_demo_images(tmp_path / "images", 4)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler), signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        result, _ = run_cli(tmp_path / "images", tmp_path / "out", *TINY, in_process=True)
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    assert result.returncode == INTERRUPTED and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(canceled) == 1, "the run was stopped as a Ctrl-C stops it"
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert f"the ML Metadata store {tmp_path / 'out' / 'metadata.sqlite'} stayed locked by another process" in line
    assert line.startswith("error: interrupted (SIGTERM); "), line  # what stopped it, named: not a Ctrl-C
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # as it was before the run
    with run_lock.exclusive_run(tmp_path / "out"):  # released
        pass


def test_a_ctrl_c_that_c_code_printed_and_dropped_before_failing_is_still_the_run_s_interrupt(tmp_path, monkeypatch):
    """TensorFlow's C++, given the KeyboardInterrupt of a Python call it made, can print it, clear it and fail with
    an error of its own that names no Ctrl-C; here a node outside any executor's guard (a resolver) does so. The
    run still ends as interrupted: exit 130, what ran CANCELED, no traceback."""
    import signal

    from components import tuner
    from contract.errors import INTERRUPTED
    from tests.helpers import drops_a_ctrl_c_then_fails

    monkeypatch.setattr(tuner.NewestStrategy, "resolve_artifacts", lambda *args: drops_a_ctrl_c_then_fails())
    result, summary, handler_after = _tiny_run_as_in_a_terminal(tmp_path)
    assert result.returncode == INTERRUPTED and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert summary["error"].startswith("interrupted (Ctrl-C)"), summary["error"]
    assert handler_after is signal.default_int_handler, "the run's guard gave SIGINT back"
    with run_lock.exclusive_run(tmp_path / "out"):  # released
        pass


def _tiny_run_as_in_a_terminal(tmp_path):
    """A tiny run on 4 demo images per class, in this process, SIGINT handled by Python's own handler as in a
    terminal (a suite started in the background has it ignored): (its result, its summary, SIGINT's handler
    right after it, before the suite's own is put back)."""
    import signal

    from ingest import synthetic
    from tests.helpers import TINY, run_cli

    synthetic.write_demo_images(tmp_path / "images", 4)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return (*run_cli(tmp_path / "images", tmp_path / "out", *TINY, in_process=True),
                signal.getsignal(signal.SIGINT))
    finally:
        signal.signal(signal.SIGINT, previous)
