"""Resolver strategies: the newest (blessed model | artifact) older than those in `before`.

TFX's LatestBlessedModelStrategy returns the newest blessed model, which on a
rerun with no new data is this run's (cached) candidate itself: the Evaluator's
inputs change, it re-evaluates the model against itself, and the Pusher ships
it again. Asking for the newest blessed model *created before* a given
artifact gives the same answer on every rerun, so everything stays cached:
- baseline for the Evaluator: before = this run's candidate model; given the
  pushes (`pushed_model`), the model served when the candidate was trained
  comes first, so that after a rollback the candidate must beat the model
  rolled back to, not the newer one that was withdrawn (also where the rollback
  came after a candidate that was never pushed was trained: a resumed run's
  cached candidate); a push whose version is damaged (files missing or changed
  since the push) is passed over, and its model is never the baseline;
- warm start for the Trainer: before = the examples it trains on, so a model
  never warm-starts from one trained after its data arrived.
Given a root, each strategy (and RootSpanRangeStrategy, TFX's span range)
reads only artifacts whose files lie under it: a Kubeflow package's store may
hold other deployments' artifacts in the same pipeline context.
"""

from typing import Dict, List, Optional, Tuple

from absl import logging
from tfx import types
from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.components.common import resolver
from tfx.dsl.input_resolution.strategies.span_range_strategy import SpanRangeStrategy

from contract import metadata
from contract import served as served_lib

BEFORE_KEY = "before"
MODEL_KEY = "model"
BLESSING_KEY = "model_blessing"
ARTIFACT_KEY = "artifact"
PUSHED_KEY = "pushed_model"


def select_blessed_before(before: List[types.Artifact], models: List[types.Artifact],
                          blessings: List[types.Artifact]) -> Tuple[list, list]:
    """([model], [blessing]) of the newest blessed model older than all of `before`, or ([], [])."""
    newest_allowed = min((a.id for a in before), default=None)
    blessed_by_model_id = {
        b.get_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY): b
        for b in sorted(blessings, key=lambda b: b.id)
        if b.get_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY) == 1
    }
    for model in sorted(models, key=lambda m: m.id, reverse=True):
        if newest_allowed is not None and model.id >= newest_allowed:
            continue
        if model.id in blessed_by_model_id:
            return [model], [blessed_by_model_id[model.id]]
    return [], []


def damaged_push(push: types.Artifact) -> str | None:
    """Why the version a push wrote cannot be served as pushed (contract.served.damage: incomplete, or files that
    differ from their digests; hashes its files), None if it can or if the push names no folder."""
    folder = push.get_string_custom_property(metadata.PUSHED_DESTINATION)
    return served_lib.damage(folder) if folder else None


def select_served_before(before: List[types.Artifact], models: List[types.Artifact],
                         blessings: List[types.Artifact], pushes: List[types.Artifact]) -> Tuple[list, list, set]:
    """([model], [blessing], {ids of models whose versions are damaged}): the model of the newest intact push
    older than all of `before`, if that model is blessed and older too; else [], []. A damaged version (files
    missing or changed since its push) is passed over: it is never the baseline."""
    newest_allowed = min((a.id for a in before), default=None)
    pushed = [p for p in pushes if p.get_int_custom_property(metadata.PUSHED) == 1]
    # A rollback after the candidate was trained, the candidate never pushed (a run killed before its push, resumed
    # after the rollback, its candidate cached), withdrew the model served then: the candidate must beat the model
    # served now. A candidate that was pushed keeps the baseline it was judged against: a rerun with no new data
    # after a rollback that withdrew it stays cached and pushes nothing.
    candidates = {a.id for a in before}
    rolled_back_since = newest_allowed is not None and any(
        p.id >= newest_allowed and p.get_int_custom_property(metadata.ROLLED_BACK_TO) for p in pushed) and not any(
        p.get_int_custom_property(metadata.PUSHED_MODEL_ID) in candidates for p in pushed)
    older = pushed if rolled_back_since else [p for p in pushed if newest_allowed is None or p.id < newest_allowed]
    damaged = set()
    for push in sorted(older, key=lambda p: p.id, reverse=True):
        served_id = push.get_int_custom_property(metadata.PUSHED_MODEL_ID)
        why = damaged_push(push)
        if why:
            logging.warning("baseline: version %s is passed over: %s",
                            push.get_int_custom_property(metadata.PUSHED_VERSION), why)
            damaged.add(served_id)
            continue
        found = select_blessed_before(before, [m for m in models if m.id == served_id], blessings)
        if rolled_back_since and not found[0]:  # a model trained after the candidate: the push before it
            continue
        return (*found, damaged)
    return [], [], damaged


class LatestBlessedBeforeStrategy(resolver.ResolverStrategy):
    """Inputs: `before` (artifacts of this run), `model` and `model_blessing` (all of them), optionally
    `pushed_model` (all pushes): the served model if there is one, else the newest blessed model (not one whose
    version is damaged)."""

    def __init__(self, root: Optional[str] = None):
        self._root = root  # only artifacts under it count (contract.metadata.of_root)

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                          ) -> Optional[Dict[str, List[types.Artifact]]]:
        input_dict = metadata.of_root(input_dict, self._root)
        before = input_dict.get(BEFORE_KEY, [])
        models, blessings = input_dict.get(MODEL_KEY, []), input_dict.get(BLESSING_KEY, [])
        model, blessing, damaged = select_served_before(before, models, blessings, input_dict.get(PUSHED_KEY, []))
        if not model:
            model, blessing = select_blessed_before(before, [m for m in models if m.id not in damaged], blessings)
        resolved = {BEFORE_KEY: list(before), MODEL_KEY: model, BLESSING_KEY: blessing}
        return resolved | ({PUSHED_KEY: []} if PUSHED_KEY in input_dict else {})


def select_newest_before(before: List[types.Artifact], artifacts: List[types.Artifact]) -> list:
    """[the newest of `artifacts` older than all of `before`], or []."""
    newest_allowed = min((a.id for a in before), default=None)
    older = [a for a in artifacts if newest_allowed is None or a.id < newest_allowed]
    return [max(older, key=lambda a: a.id)] if older else []


class LatestBeforeStrategy(resolver.ResolverStrategy):
    """Inputs: `before` (artifacts of this run) and `artifact` (all of one type): the newest older one.

    Used for the previous span's statistics, which the size-drift check compares with.
    """

    def __init__(self, root: Optional[str] = None):
        self._root = root  # only artifacts under it count (contract.metadata.of_root)

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                          ) -> Optional[Dict[str, List[types.Artifact]]]:
        input_dict = metadata.of_root(input_dict, self._root)
        return {BEFORE_KEY: list(input_dict.get(BEFORE_KEY, [])),
                ARTIFACT_KEY: select_newest_before(input_dict.get(BEFORE_KEY, []), input_dict.get(ARTIFACT_KEY, []))}


class RootSpanRangeStrategy(SpanRangeStrategy):
    """TFX's SpanRangeStrategy over the spans ingested under `root` only (contract.metadata.of_root)."""

    def __init__(self, range_config, root: Optional[str] = None):
        super().__init__(range_config)
        self._root = root

    def resolve_artifacts(self, store, input_dict):
        return super().resolve_artifacts(store, metadata.of_root(input_dict, self._root))
