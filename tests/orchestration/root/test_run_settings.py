"""A root remembers how it was run: the record, how `run` lays it under its flags, and what `schedule --local` makes
of it. The record's effect on a whole run (a scheduled line run as cron runs it) is in tests/e2e/test_local_pipeline.py.
"""

import json
import os

import pytest

import pipeline_runner
from cli import flags, local_run
from orchestration.root import marker, run_settings


def _root(tmp_path, settings=None, source=None):
    root = tmp_path / "root"
    root.mkdir()
    marker.claim(root, marker.inspect(root))
    if settings is not None:
        run_settings.write(root, run_settings.Recorded(settings, source))
    return root


def _run_args(*arguments):
    return pipeline_runner.build_parser().parse_args(["run", *map(str, arguments)])


def test_a_record_round_trips_and_is_replaced_whole(tmp_path):
    root = _root(tmp_path, {"weights": "none", "min_accuracy": 0.8}, {"kind": "folder", "location": "/data/pets"})
    assert run_settings.read(root) == run_settings.Recorded({"weights": "none", "min_accuracy": 0.8},
                                                            {"kind": "folder", "location": "/data/pets"})
    run_settings.write(root, run_settings.Recorded({"tune": True}))
    assert run_settings.read(root) == run_settings.Recorded({"tune": True}, None)
    assert sorted(os.listdir(root)) == [".cats-vs-dogs-root", "run_settings.json"], "no temporary file is left"


@pytest.mark.parametrize("make, reason", [
    (lambda path: path.write_text("{bad"), "is not valid JSON"),
    (lambda path: path.write_bytes(b"\xff\xfe"), "is not valid JSON"),
    (lambda path: path.write_text('{"settings": [1]}'), "does not hold a record of run settings"),
    (lambda path: path.write_text('{"settings": {}, "source": {"kind": 3}}'), "holds a source that is of no kind"),
    (lambda path: path.write_text('{"settings": {}, "source": {"kind": "ftp", "location": "/x"}}'), "of no kind"),
    (lambda path: path.write_text('{"settings": {}, "source": {"kind": "demo", "location": "/x"}}'),
     "is the demo without a count of images"),
    (lambda path: path.write_text('{"settings": {}, "source": {"kind": "folder", "location": "pets"}}'),
     "is not an absolute path of one line"),
    (lambda path: path.write_text('{"settings": {}, "source": {"kind": "folder", "location": "/p\\ud800"}}'),
     "is not an absolute path of one line"),
    (lambda path: path.write_text('{"version": 99, "settings": {}}'), "written by a newer version"),
    (lambda path: path.mkdir(), "is not a file"),
    (lambda path: path.symlink_to(path.parent.parent / "elsewhere.json"), "is not a file"),
    (lambda path: path.write_bytes(b" " * (2 << 20)), "bytes, not a record of run settings"),
])
def test_a_record_that_cannot_be_used_is_one_line_naming_it(tmp_path, make, reason):
    root = _root(tmp_path)
    (tmp_path / "elsewhere.json").write_text('{"settings": {"weights": "none"}}')
    make(root / "run_settings.json")
    with pytest.raises(run_settings.UnreadableRecordError) as refused:
        run_settings.read(root)
    line = str(refused.value)
    assert line.startswith(f"{root / 'run_settings.json'} ") and reason in line and "\n" not in line
    assert f"mv {root / 'run_settings.json'} {root / 'run_settings.json'}.damaged" in line
    assert (tmp_path / "elsewhere.json").read_text() == '{"settings": {"weights": "none"}}', "a link is never read"


def test_the_record_lies_under_the_flags_given_and_takes_the_new_ones(tmp_path):
    weights = tmp_path / "pets_no_top.h5"
    root = _root(tmp_path, {"weights": str(weights), "min_eval_examples": 10, "min_accuracy": 0.9, "retired": 1},
                 {"kind": "folder", "location": "/data/pets"})
    args = _run_args("--output-dir", root, "--min-accuracy", "0.8", "--span-window", "2")
    record, notes, laid = local_run._lay_recorded_settings(args)
    assert (args.weights, args.min_eval_examples, args.min_accuracy, args.span_window) == (str(weights), 10, 0.8, 2)
    assert record.settings == {"weights": str(weights), "min_eval_examples": 10, "min_accuracy": 0.8,
                               "span_window": 2}
    assert record.source == {"kind": "folder", "location": "/data/pets"}, "no source given: the recorded one kept"
    assert laid in notes and laid.endswith(f"--min-eval-examples 10 --weights {weights}")
    (changed,) = [note for note in notes if note.startswith("settings that differ from this root's record: ")]
    assert "--min-accuracy 0.8 (was 0.9)" in changed and "--span-window 2 (new)" in changed
    assert changed.endswith(f"; {root / 'run_settings.json'} now holds them") and "--weights" not in changed
    assert any("retired (no setting of this version)" in note for note in notes)
    # the config a run then trains with is the record's with the flags over it
    config, _ = flags.config_from_args(args)
    assert (config.training.weights, config.evaluation.min_accuracy, config.data.min_eval_examples) == \
        (str(weights), 0.8, 10)


def test_a_first_run_records_what_it_was_given_with_paths_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pets").mkdir()
    args = _run_args("--data-dir", "pets", "--output-dir", "new-root", "--weights", "base.h5", "--tune",
                     "--tune-trials", "3", "--allow-anomalies", "--beam-workers", "1")
    record, notes, laid = local_run._lay_recorded_settings(args)
    assert record.settings == {"weights": str(tmp_path / "base.h5"), "tune": True, "tune_trials": 3,
                               "beam_workers": 1}, "--allow-anomalies is for one run: never recorded"
    assert record.source == {"kind": "folder", "location": str(tmp_path / "pets")}
    assert notes == [] and laid == ""


def test_a_search_budget_waits_in_the_record_while_the_search_is_off(tmp_path):
    root = _root(tmp_path, {"tune": True, "tune_trials": 2, "weights": "none"})
    args = _run_args("--output-dir", root, "--no-tune")
    record, notes, _ = local_run._lay_recorded_settings(args)
    assert args.tune is False and args.tune_trials is None and args.weights == "none"
    assert flags.tuning_from_args(args) is None, "a recorded budget is no refused flag"
    assert record.settings == {"tune": False, "tune_trials": 2, "weights": "none"}
    args = _run_args("--output-dir", root)
    local_run._lay_recorded_settings(args)
    assert (args.tune, args.tune_trials) == (True, 2)


def test_the_demos_settings_lie_under_the_record(tmp_path):
    root = _root(tmp_path, {"min_accuracy": 0.8}, {"kind": "demo", "images": 20})
    args = _run_args("--demo", "--output-dir", root, "--demo-images", "20")
    record, notes, _ = local_run._lay_recorded_settings(args)
    assert args.min_accuracy == 0.8 and args.weights == "none"
    assert record.settings["min_accuracy"] == 0.8 and record.settings["weights"] == "none"
    assert record.source == {"kind": "demo", "images": 20}
    assert not any("differ" in note for note in notes), "the demo's own settings change nothing the user chose"


def test_a_refused_run_leaves_the_record_as_it_was(tmp_path, capsys):
    root = _root(tmp_path, {"weights": "none"}, {"kind": "folder", "location": str(tmp_path)})
    before = (root / "run_settings.json").read_bytes()
    code = pipeline_runner.main(["run", "--output-dir", str(root), "--data-dir", str(tmp_path / "absent"),
                                 "--min-accuracy", "0.7"])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    assert (root / "run_settings.json").read_bytes() == before


def test_a_recorded_setting_that_no_longer_holds_is_named_with_where_it_came_from(tmp_path, capsys):
    root = _root(tmp_path, {"weights": str(tmp_path / "gone.h5")}, {"kind": "folder", "location": str(tmp_path)})
    code = pipeline_runner.main(["run", "--output-dir", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"--weights {tmp_path / 'gone.h5'}: no such file" in err
    assert f"settings from this root's earlier runs ({root / 'run_settings.json'})" in err


# schedule --local ---------------------------------------------------------------------------------------------

def _schedule(capsys, root, *more):
    code = pipeline_runner.main(["schedule", "--local", "--cron", "0 3 * * *", "--output-dir", str(root),
                                 *map(str, more)])
    out, err = capsys.readouterr()
    return code, out, err


def test_schedule_takes_the_recorded_source_and_says_what_each_run_trains_with(tmp_path, capsys):
    weights = tmp_path / "pets_no_top.h5"
    weights.write_bytes(b"h5")
    (tmp_path / "pets").mkdir()
    (tmp_path / "more").mkdir()
    root = _root(tmp_path, {"weights": str(weights), "min_eval_examples": 10},
                 {"kind": "folder", "location": str(tmp_path / "pets")})
    code, out, err = _schedule(capsys, root)
    assert code == 0, err
    assert f" run --data-dir {tmp_path / 'pets'} --output-dir {root} >> " in out and out.count("\n") == 1
    said, paste = err.split("\n", 1)
    assert said == (f"each run trains with the settings recorded in {root / 'run_settings.json'}: "
                    f"--min-eval-examples 10 --weights {weights} (a `run` given other flags changes them)")
    # the line to paste into a shell: what cron hands to sh, the 5 time fields gone
    assert paste == (f"to run it now as cron will (its output goes to the log, {root / 'scheduled_runs.log'}):\n"
                     f"  {out.strip().split(' ', 5)[5]}\n")
    code, out, _ = _schedule(capsys, root, "--data-dir", tmp_path / "more")
    assert code == 0 and f" run --data-dir {tmp_path / 'more'} --output-dir " in out, "a flag given wins"
    # with a drift check, its line to paste too
    code, out, err = _schedule(capsys, root, "--monitor-cron", "30 * * * *")
    assert code == 0 and out.count("\n") == 2, err
    monitor = out.strip().split("\n")[1]
    assert f" monitor --output-dir {root}" in monitor
    assert err.endswith(f"and the drift check as cron will (the same log):\n  {monitor.split(' ', 5)[5]}\n"), err


def test_schedule_without_a_source_anywhere_is_refused_naming_what_is_missing(tmp_path, capsys):
    for root in (tmp_path / "new", _root(tmp_path, {"weights": "none"})):
        code, out, err = _schedule(capsys, root)
        assert code == 2 and out == "" and err.count("\n") == 1
        assert f"needs --data-dir (the folder each nightly run ingests): {root} has no source recorded" in err


def test_schedule_refuses_a_record_every_run_would_stop_on(tmp_path, capsys):
    root = _root(tmp_path, {"weights": str(tmp_path / "gone.h5")}, {"kind": "folder", "location": str(tmp_path)})
    code, out, err = _schedule(capsys, root)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"each scheduled run would stop: --weights {tmp_path / 'gone.h5'}: no such file" in err


def test_schedule_of_a_demo_root_reruns_the_demo(tmp_path, capsys):
    root = _root(tmp_path, {"weights": "none", "min_accuracy": 0.9}, {"kind": "demo", "images": 30})
    code, out, _ = _schedule(capsys, root)
    assert code == 0 and f" run --demo --demo-images 30 --output-dir {root} >> " in out
    assert json.loads((root / "run_settings.json").read_text())["source"] == {"kind": "demo", "images": 30}


@pytest.mark.parametrize("name, value, why", [
    ("tune", "no", "it is a switch: true or false"),
    ("tflite", 1, "it is a switch: true or false"),
    ("seed", True, "not a number or a text"),
    ("beam_workers", -3, "must be an integer >= 0"),
    ("tune_trials", "many", "not an integer"),
    ("min_accuracy", "high", "not a number"),
    ("min_accuracy", {"a": 1}, "not a number or a text"),
    ("weights", "relative/base.h5", "a weights file must be named by its absolute path"),
    ("head_epochs", "2\n--tune", "it holds a control character"),
])
def test_a_recorded_value_its_flag_would_refuse_is_refused_in_one_line_unless_the_flag_is_given(
        tmp_path, name, value, why):
    root = _root(tmp_path, {name: value, "min_eval_examples": 10})
    option = "--" + name.replace("_", "-")
    with pytest.raises(flags.SettingsError) as refused:
        local_run._lay_recorded_settings(_run_args("--output-dir", root))
    line = str(refused.value)
    assert line.startswith(f"{root / 'run_settings.json'} records {option} as ") and why in line, line
    assert "\n" not in line and line.endswith(f"give {option} with the value you want, and the record takes it")
    given = {"tune": ["--no-tune"], "tflite": ["--tflite"], "seed": ["--seed", "3"], "beam_workers": ["--beam-workers",
             "1"], "tune_trials": ["--tune-trials", "2", "--tune"], "min_accuracy": ["--min-accuracy", "0.5"],
             "weights": ["--weights", "none"], "head_epochs": ["--head-epochs", "2"]}[name]
    record, _, _ = local_run._lay_recorded_settings(_run_args("--output-dir", root, *given))
    assert repr(record.settings[name]) != repr(value) and record.settings["min_eval_examples"] == 10


def test_the_lines_a_run_says_of_its_record_come_once_the_record_is_written(tmp_path, capsys):
    """A run refused before it starts (here by its source) says nothing of a record it did not change."""
    root = _root(tmp_path, {"min_accuracy": 0.9}, {"kind": "folder", "location": str(tmp_path)})
    code = pipeline_runner.main(["run", "--output-dir", str(root), "--data-dir", str(tmp_path / "gone"),
                                 "--min-accuracy", "0.5"])
    out, err = capsys.readouterr()
    assert code == 2 and "record" not in out + err.replace(str(root / "run_settings.json"), "")
    assert run_settings.read(root).settings == {"min_accuracy": 0.9}


def test_a_demo_records_its_weights_and_bar_not_the_from_scratch_schedule_random_weights_take_anyway(tmp_path):
    args = _run_args("--demo", "--output-dir", tmp_path / "demo")
    record, _, _ = local_run._lay_recorded_settings(args)
    assert record.settings == {"weights": "none", "min_accuracy": 0.9}
    args = _run_args("--output-dir", tmp_path / "demo", "--weights", "imagenet")
    config, notes = flags.config_from_args(args)
    assert config.training.fine_tune_from == 100 and notes == [], "ImageNet weights: the default schedule"


@pytest.mark.parametrize("settings, source, message", [
    ({"tune": True, "tune_trials": 0}, "pets", "tune_trials: must be an integer in [1, 1000], got 0"),
    ({"weights": "none"}, "gone", "data directory"),
])
def test_schedule_refuses_a_record_or_source_each_run_would_stop_on(tmp_path, capsys, settings, source, message):
    (tmp_path / "pets").mkdir()
    root = _root(tmp_path, settings, {"kind": "folder", "location": str(tmp_path / source)})
    code, out, err = _schedule(capsys, root)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_schedule_refuses_a_root_every_run_would_refuse_for_its_name(tmp_path, capsys):
    (tmp_path / "pets").mkdir()
    for name in ("x$y[1]", "runs*"):
        code, out, err = _schedule(capsys, tmp_path / name, "--data-dir", tmp_path / "pets")
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert "which TFX and Beam read as glob patterns" in err and not (tmp_path / name).exists()


def _queue(folder):
    """A labeling queue as monitoring.queue publishes it: its record at the top, the class folders beside."""
    from contract import layout

    for name in ("cat", "dog", layout.QUEUE_UNSORTED):
        (folder / name).mkdir(parents=True)
    (folder / layout.QUEUE_RECORD).write_text("{}")
    return folder


def test_a_labeling_queue_is_refused_as_the_source_a_run_or_the_schedule_records(tmp_path, capsys):
    """`run` records its source as the root's: on a queue, every later run (and the nightly one) would train on the
    queue's images alone. A queue is ingested into the root; `ingest` still takes it."""
    root = _root(tmp_path, {"weights": "none"}, {"kind": "folder", "location": str(tmp_path / "pets")})
    queue = _queue(root / "labeling" / "queue-1")
    for command in (["run", "--weights", "none"], ["schedule", "--local", "--cron", "0 3 * * *"]):
        code = pipeline_runner.main([*command, "--data-dir", str(queue), "--output-dir", str(root)])
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert (f"--data-dir {queue} is a labeling queue: ingest it into the root with `ingest --data-dir {queue} "
                f"--output-dir {root}`, then run with --data-dir naming your photo folder") in err
    assert run_settings.read(root).source == {"kind": "folder", "location": str(tmp_path / "pets")}, "unchanged"
    # a recorded source that is a queue (from before this check) is refused by the schedule too
    run_settings.write(root, run_settings.Recorded({"weights": "none"}, {"kind": "folder", "location": str(queue)}))
    code, out, err = _schedule(capsys, root)
    assert code == 2 and "is a labeling queue" in err, err
