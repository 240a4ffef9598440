"""TFX's Tuner, recording its whole search and stopping the run when no trial could train; the strategy of
the Resolver that takes the newest search's result when a run does not search.

TFX's own executor writes the best hyperparameters and the completed trials
only. This one (trainer.tuning's tuner keeps the table) also writes, beside
KerasTuner's values in the best_hyperparameters file (which the Trainer
reads), the run that searched and every trial: its values, its validation
figures or why it failed, and the one kept; the Trainer copies that record
into the model's training history, where the summary, the report and the
model card read it. When every trial failed, it fails in one line naming the
first failure and each trial's reason: the Trainer and the Pusher do not run, and the served model
stays as it was.
"""

from __future__ import annotations

import json
import os

from tfx.components.tuner import executor as tuner_executor
from tfx.components.tuner.component import Tuner
from tfx.dsl.components.base import executor_spec
from tfx.dsl.components.common import resolver
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils

from contract import metadata
from contract.errors import RunFailedError
from trainer import hyperparameters as hyperparameters_lib

BEST_HYPERPARAMETERS_FILE = "best_hyperparameters.txt"  # the name TFX's Tuner writes and its Trainer reads


class SearchFailed(RunFailedError, RuntimeError):
    """Every trial of the search failed; the message names the first failure."""


def every_trial_failed(table: list[dict]) -> str | None:
    """The one line that stops the run when no trial of `table` completed, naming the first trial's settings and
    each trial's reason; None when one did."""
    if any(row["status"] == hyperparameters_lib.COMPLETED for row in table):
        return None
    if not table:
        return "the hyperparameter search ran no trial"
    first, reasons = table[0], []
    for row in table[1:]:  # each trial's reason, one that repeats the one before it said so in a word
        same = row.get("reason") == (reasons[-1][1] if reasons else first.get("reason"))
        reasons.append((row["trial"], row.get("reason"), same))
    rest = "".join(f"; trial {trial}: {'the same' if same else reason}" for trial, reason, same in reasons)
    return (f"every one of the {len(table)} trials of the hyperparameter search failed; the first (trial "
            f"{first['trial']}, {json.dumps(first['values'], sort_keys=True)}): {first.get('reason')}{rest}")


def search_record(best: dict, table: list[dict], run_id: str | None, model: dict | None = None,
                  budget: dict | None = None) -> dict:
    """KerasTuner's config of the best values, with the search's record under hyperparameters.TUNED_KEY: the run,
    the trial table, the model searched for (hyperparameters.model_of) and the budget (trials asked for, whether
    the time budget ran out first: trainer.tuning's CheapTrials.budget)."""
    return {**best, hyperparameters_lib.TUNED_KEY: {"run": run_id, "trials": table, "model": model,
                                                    "budget": budget}}


class _SearchExecutor(tuner_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties):
        searched = tuner_executor.search(input_dict, exec_properties, self._get_tmp_dir())
        table = searched.trial_table()
        failure = every_trial_failed(table)
        if failure:
            raise SearchFailed(failure)
        tuner_executor.write_best_hyperparameters(searched, output_dict)
        metadata.stamp_root(output_dict[standard_component_specs.BEST_HYPERPARAMETERS_KEY])
        best = searched.get_best_hyperparameters()[0].get_config()
        run_id = self._context.pipeline_run_id if self._context else None
        path = os.path.join(artifact_utils.get_single_uri(
            output_dict[standard_component_specs.BEST_HYPERPARAMETERS_KEY]), BEST_HYPERPARAMETERS_FILE)
        io_utils.write_string_file(path, json.dumps(search_record(
            best, table, run_id, hyperparameters_lib.model_of(searched.base, searched.image_size),
            searched.budget())))


class SearchingTuner(Tuner):
    """TFX's Tuner, with the executor above."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(_SearchExecutor)


class NewestStrategy(resolver.ResolverStrategy):
    """Each input's newest artifact, or none: TFX's LatestArtifactStrategy fails the run when there is none (a
    pipeline that never searched). The newest search's result is the same on every rerun: the cache holds. With
    `root`, only artifacts under it count (contract.metadata.of_root: another deployment's search is not ours)."""

    def __init__(self, root: str | None = None):
        self._root = root

    def resolve_artifacts(self, store, input_dict):
        return {key: [max(artifacts, key=lambda a: a.id)] if artifacts else []
                for key, artifacts in metadata.of_root(input_dict, self._root).items()}
