"""The hyperparameters a model trained with and where they came from: one record, written by the Trainer.

trainer.task.run_fn writes it into the training history (layout.TRAINING_HISTORY_FILE) under "hyperparameters";
the run summary, the run report and the model card read it back with `from_history`. The JSON keys are the
ones the Trainer has always written, so a history written before this record existed reads the same.
Light on purpose (no TensorFlow): the command line builds its schedule note here before any run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

# `source` as the Trainer writes it: a search's result laid on the settings, or the settings as configured.
SEARCHED, CONFIGURED = "tuned", "defaults"
# Where the values came from, seen from the run that reads the record (`origin`): a search of that run (which
# may be an earlier run's search, its Tuner cached), a search of an earlier run reused, or no search at all.
TUNED_HERE, REUSED, DEFAULTS = "tuned in this run", "reused", "defaults"
# Where one training setting's value came from (`origin_of`).
FROM_SEARCH, FROM_USER, FROM_CONFIG = "searched", "given", "configured"


@dataclasses.dataclass(frozen=True)
class HyperparameterRecord:
    """The hyperparameters a Trainer trained with and where they came from.

    source: SEARCHED (a search's result was laid on the settings) or CONFIGURED (no search recorded for the
        pipeline, or one for another model: `not_applied` says why).
    values: the searched values laid on the settings, by searched name (trainer.hyperparameters.FIELDS; one name
        may set several fields: augmentation sets rotation and zoom).
    fixed: the training settings the user gave, which no search changes.
    run: the run whose search this is (also for a search not applied); None without one.
    trials: the search's trial table (trainer.tuning), None when not recorded.
    budget: what the search was allowed and used ({"trials", "ran", "minutes", "out_of_time"}), if recorded.
    left_out: why each searched value not laid on the settings was left out (a pair the user set half of).
    not_applied: why a search's result was not used at all (it was for another model); None otherwise.
    warm_started_from: the model this Trainer warm-started from, None if it did not; the history holds it beside
        the record (its own top-level key), not in it.
    read_in_run / tuner_in_run: set by `seen_from` only (never written): the run that reads the record, and
        whether that run has a Tuner (which ran the search, or found it cached).
    """

    source: str
    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    fixed: tuple[str, ...] = ()
    run: str | None = None
    trials: tuple[Mapping[str, Any], ...] | None = None
    budget: Mapping[str, Any] | None = None
    left_out: tuple[str, ...] = ()
    not_applied: str | None = None
    warm_started_from: str | None = None
    read_in_run: str | None = None
    tuner_in_run: bool = False

    @property
    def searched(self) -> bool:
        return self.source == SEARCHED

    def to_json(self) -> dict:
        """The record as the training history holds it: the keys the Trainer has always written."""
        record = {"source": self.source, "values": dict(self.values), "fixed": list(self.fixed), "run": self.run,
                  "trials": None if self.trials is None else [dict(row) for row in self.trials]}
        if self.not_applied is not None:
            return record | {"not_applied": self.not_applied}
        return record | {"budget": None if self.budget is None else dict(self.budget),
                         "left_out": list(self.left_out)}

    @classmethod
    def from_json(cls, record: Mapping[str, Any], warm_started_from: str | None = None) -> HyperparameterRecord:
        """The record of its JSON (to_json's keys; any an older history lacks take their defaults)."""
        trials = record.get("trials")
        return cls(source=record.get("source") or CONFIGURED, values=dict(record.get("values") or {}),
                   fixed=tuple(record.get("fixed") or ()), run=record.get("run"),
                   trials=None if trials is None else tuple(trials), budget=record.get("budget"),
                   left_out=tuple(record.get("left_out") or ()), not_applied=record.get("not_applied"),
                   warm_started_from=warm_started_from)

    @classmethod
    def from_history(cls, history: Mapping[str, Any] | None) -> HyperparameterRecord | None:
        """The record of a training history; None for a history without one (written before there was one)."""
        record = (history or {}).get("hyperparameters")
        return None if record is None else cls.from_json(record, (history or {}).get("warm_started_from"))

    def seen_from(self, run_id: str | None, tuner_in_run: bool = False) -> HyperparameterRecord:
        """The record as run `run_id` (which has a Tuner, or not) reads it: see `origin` and `cached`."""
        return dataclasses.replace(self, read_in_run=run_id, tuner_in_run=tuner_in_run)

    @property
    def origin(self) -> str:
        """TUNED_HERE, REUSED or DEFAULTS, for the run that read it (seen_from): a model whose Trainer was cached
        took a search of an earlier run, whose Tuner was cached too: tuned here all the same."""
        if not self.searched:
            return DEFAULTS
        return TUNED_HERE if self.tuner_in_run or self.run == self.read_in_run else REUSED

    @property
    def cached(self) -> bool:
        """Tuned here, but by a search the run found cached: no trial ran in it."""
        return self.origin == TUNED_HERE and self.run != self.read_in_run

    @property
    def cold_trials(self) -> str | None:
        """What a warm-started model must say of its searched values: the trials did not warm-start."""
        from trainer import hyperparameters

        return hyperparameters.cold_trials(self.warm_started_from) if self.searched else None

    @property
    def caveats(self) -> list[str]:
        """Why searched values were left out, then what the trials did not do as this Trainer did."""
        return [*self.left_out, *filter(None, [self.cold_trials])]

    def searched_settings(self) -> dict[str, Any]:
        """{training setting: value} that the search set (a name of several fields gives each its value)."""
        from trainer import hyperparameters

        return {field: value for name, value in self.values.items()
                for field in hyperparameters.FIELDS.get(name, ())}

    def origin_of(self, setting: str) -> str:
        """Where the value of one training setting came from: FROM_SEARCH, FROM_USER or FROM_CONFIG."""
        if setting in self.searched_settings():
            return FROM_SEARCH
        return FROM_USER if setting in self.fixed else FROM_CONFIG

    def summary_json(self) -> dict:
        """The run summary's view of the record (its "hyperparameters" in run_summary.json, as it has always been
        written): the origin seen from the run read, the trial table and budget only when tuned there (a reused
        search's run has them in its own summary)."""
        if not self.searched:
            return {"source": DEFAULTS, "run": None, "values": {}, "fixed": list(self.fixed), "trials": None,
                    "cached": False, "not_applied": self.not_applied}
        here = self.origin == TUNED_HERE
        return {"source": self.origin, "run": self.run, "values": dict(self.values), "fixed": list(self.fixed),
                "trials": [dict(row) for row in self.trials or ()] if here and self.trials is not None else None,
                "cached": self.cached, "budget": dict(self.budget) if here and self.budget is not None else None,
                "left_out": self.caveats}


def _flag(name: str, value: Any, searched: Mapping[str, Any]) -> str:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else f"--no-{name.replace('_', '-')}"
    if name not in searched:
        return f"{flag} {value}"
    trained = searched[name]
    shown = f"{trained:.4g}" if isinstance(trained, float) else str(trained)
    return f"{flag} {value}" if shown == str(value) else f"{flag} {shown} (searched; the schedule's {value})"


class ScheduleNote(str):
    """A note naming settings chosen for the user by flag ("--fine-tune-from 30"): the text said before the run,
    when a search's values are not known yet. `as_trained` builds it again from a model's record, each setting a
    search replaced shown with the value trained: "--fine-tune-from 60 (searched; the schedule's 30)"."""

    def __new__(cls, before: str, settings: Mapping[str, Any], after: str):
        note = super().__new__(cls, before + ", ".join(_flag(name, value, {}) for name, value in settings.items())
                               + after)
        note.before, note.settings, note.after = before, dict(settings), after
        return note

    def __getnewargs__(self):  # copies (dataclasses.asdict of a summary) make the note again from its parts
        return self.before, self.settings, self.after

    def as_trained(self, record: HyperparameterRecord | None) -> str:
        searched = record.searched_settings() if record is not None else {}
        return self.before + ", ".join(_flag(name, value, searched) for name, value in self.settings.items()) \
            + self.after
