"""The one record of a model's hyperparameters: written as the training history always held it, read back whole."""

import copy
import dataclasses
import json

import pytest

from trainer import hyperparameter_record as record_lib
from trainer.hyperparameter_record import HyperparameterRecord, ScheduleNote

SEARCHED = HyperparameterRecord(record_lib.SEARCHED, {"dropout": 0.2, "augmentation": 0.1}, ("head_epochs",),
                                run="run-3", trials=({"trial": "0", "status": "completed", "val_loss": 0.4},),
                                budget={"trials": 2, "ran": 1, "minutes": 1.0, "out_of_time": True},
                                left_out=("why not",))
OTHER_MODEL = HyperparameterRecord(record_lib.CONFIGURED, fixed=("dropout",), run="run-3",
                                   not_applied="the newest search, of run run-3, was for another model: alpha 0.35")


@pytest.mark.parametrize("record,keys", [
    (SEARCHED, ["source", "values", "fixed", "run", "trials", "budget", "left_out"]),
    (OTHER_MODEL, ["source", "values", "fixed", "run", "trials", "not_applied"]),
])
def test_the_json_keeps_the_keys_the_trainer_always_wrote_and_reads_back_the_same_record(record, keys):
    written = json.loads(json.dumps(record.to_json()))
    assert list(written) == keys
    assert HyperparameterRecord.from_json(written) == record


def test_a_history_gives_the_record_with_its_warm_start_and_an_older_history_none():
    history = {"hyperparameters": SEARCHED.to_json(), "warm_started_from": "/root/Model/5"}
    record = HyperparameterRecord.from_history(history)
    assert record == dataclasses.replace(SEARCHED, warm_started_from="/root/Model/5")
    assert record.caveats == ["why not", record.cold_trials] and "/root/Model/5" in record.cold_trials
    assert "warm_started_from" not in record.to_json()  # the history's own key, beside the record
    assert HyperparameterRecord.from_history({"epochs": []}) is None and HyperparameterRecord.from_history(None) is None
    older = HyperparameterRecord.from_json({"source": "tuned", "values": {"dropout": 0.2}})  # no fixed, budget...
    assert (older.fixed, older.trials, older.budget, older.left_out) == ((), None, None, ())


def test_where_each_setting_came_from():
    assert SEARCHED.searched_settings() == {"dropout": 0.2, "rotation": 0.1, "zoom": 0.1}
    assert [SEARCHED.origin_of(name) for name in ("zoom", "head_epochs", "learning_rate")] == [
        record_lib.FROM_SEARCH, record_lib.FROM_USER, record_lib.FROM_CONFIG]


@pytest.mark.parametrize("run_id,tuner,origin,cached", [
    ("run-3", False, record_lib.TUNED_HERE, False), ("run-4", True, record_lib.TUNED_HERE, True),
    ("run-5", False, record_lib.REUSED, False)])
def test_the_origin_is_seen_from_the_run_that_reads_it(run_id, tuner, origin, cached):
    seen = SEARCHED.seen_from(run_id, tuner)
    assert (seen.origin, seen.cached) == (origin, cached)
    assert (seen.summary_json()["trials"] is None) == (origin == record_lib.REUSED)
    assert OTHER_MODEL.seen_from(run_id, tuner).origin == record_lib.DEFAULTS


def test_the_schedule_note_is_a_string_everywhere_and_says_the_values_trained_when_asked():
    note = ScheduleNote("schedule ", {"fine_tune_from": 30, "head_epochs": 6, "cached_views": False}, " (set them)")
    assert note == "schedule --fine-tune-from 30, --head-epochs 6, --no-cached-views (set them)"
    assert json.loads(json.dumps([copy.deepcopy(note)])) == [note]
    assert copy.deepcopy(note).as_trained(None) == note
    tuned = HyperparameterRecord(record_lib.SEARCHED, {"fine_tune_from": 60, "head_epochs": 6})
    assert note.as_trained(tuned) == ("schedule --fine-tune-from 60 (searched; the schedule's 30), --head-epochs 6, "
                                      "--no-cached-views (set them)")
