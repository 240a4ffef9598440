"""TFDV's own drift comparator on the window's properties, beside monitor's tests.

TFDV compares two statistics protos with `validate_statistics(..., previous_statistics=)` and a per-feature
Jensen-Shannon divergence threshold: the check TFX's guide names for drift between training and serving data.
Its threshold is a distance, not a false-alarm rate (a window of fresh images of the training data's kind
exceeds a fixed divergence more often the smaller it is), so it is shown beside the tests and takes no part in
the verdict.
"""

from __future__ import annotations

import numpy as np

JSD_THRESHOLD = 0.1


def compare(window: dict[str, np.ndarray], reference: dict[str, np.ndarray], names: tuple[str, ...],
            threshold: float = JSD_THRESHOLD) -> dict:
    """{"threshold", "features": [{name, divergence, anomaly}]} of the one-dimensional quantities `names`."""
    import pandas as pd
    import tensorflow_data_validation as tfdv

    names = [name for name in names if len(window.get(name, ())) and len(reference.get(name, ()))]

    def statistics(sample: dict[str, np.ndarray]):
        """One statistics proto of every quantity, each profiled alone: sizes cover every image of a window,
        the model's measurements its sample, so the columns differ in length."""
        merged = None
        for name in names:
            one = tfdv.generate_statistics_from_dataframe(pd.DataFrame({name: sample[name]}))
            if merged is None:
                merged = one
            else:
                merged.datasets[0].features.extend(one.datasets[0].features)
        return merged

    current, previous = statistics(window), statistics(reference)
    schema = tfdv.infer_schema(previous)
    for feature in schema.feature:
        feature.drift_comparator.jensen_shannon_divergence.threshold = threshold
    anomalies = tfdv.validate_statistics(current, schema, previous_statistics=previous)
    divergences = {info.path.step[0]: info.drift_measurements[0].value for info in anomalies.drift_skew_info
                   if info.drift_measurements}
    return {"threshold": threshold, "features": [
        {"name": name, "divergence": float(divergences.get(name, 0.0)),
         "anomaly": name in anomalies.anomaly_info} for name in names]}
