"""TFDV's comparator beside the tests: a moved property is flagged, quantities of unequal counts compared."""

import numpy as np

from monitoring import tfdv_drift


def test_tfdvs_divergence_flags_what_moved_on_samples_of_unequal_sizes():
    rng = np.random.default_rng(0)
    window = {"height": rng.normal(200, 20, 3000), "score": rng.uniform(0, 1, 300)}  # sizes of all, scores of some
    reference = {"height": rng.normal(260, 20, 200), "score": rng.uniform(0, 1, 200)}
    result = tfdv_drift.compare(window, reference, ("height", "score"))
    by_name = {row["name"]: row for row in result["features"]}
    assert by_name["height"]["anomaly"] and by_name["height"]["divergence"] > result["threshold"]
    assert not by_name["score"]["anomaly"] and by_name["score"]["divergence"] < result["threshold"]
