"""Resolver strategy: the newest blessed model created before the candidate.

TFX's LatestBlessedModelStrategy returns the newest blessed model, which on a
rerun with no new data is the cached candidate itself: the Evaluator's inputs
change, it re-evaluates the model against itself, and the Pusher ships the
same model again. Asking for the newest blessed model *older than the
candidate* gives the baseline the candidate must beat, and the same answer on
every rerun, so Evaluator and Pusher stay cached.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from tfx import types
from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.components.common import resolver

CANDIDATE_KEY = "candidate"
MODEL_KEY = "model"
BLESSING_KEY = "model_blessing"


def select_baseline(candidates: List[types.Artifact], models: List[types.Artifact],
                    blessings: List[types.Artifact]) -> Tuple[list, list]:
    """([model], [blessing]) of the newest blessed model older than every candidate, or ([], [])."""
    newest_allowed = min((c.id for c in candidates), default=None)
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


class LatestBlessedBeforeCandidateStrategy(resolver.ResolverStrategy):
    """Inputs: `candidate` (this run's model), `model`, `model_blessing` (all of them)."""

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                          ) -> Optional[Dict[str, List[types.Artifact]]]:
        model, blessing = select_baseline(input_dict.get(CANDIDATE_KEY, []), input_dict.get(MODEL_KEY, []),
                                          input_dict.get(BLESSING_KEY, []))
        return {CANDIDATE_KEY: list(input_dict.get(CANDIDATE_KEY, [])), MODEL_KEY: model, BLESSING_KEY: blessing}
