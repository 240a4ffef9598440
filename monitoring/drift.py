"""Two-sample tests of a traffic window against the served model's own data, and the verdict they give together.

Pure functions of arrays (no files, no model), so that tests and benchmarks call them with data of their own.
Every test answers with a p-value: the chance, were the window drawn from the reference's distribution, of a
difference at least as large. The false-alarm rate the user states is shared among the tests (Bonferroni: each
alarms below rate / number of tests), so the chance that any of them alarms on a window with no drift is at most
that rate, whatever the dependence between them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from monitoring.settings import PERMUTATIONS  # the settings bound the false-alarm rate by it


@dataclasses.dataclass(frozen=True)
class TestResult:
    name: str  # what was compared, e.g. "score", "width"
    method: str  # "Kolmogorov-Smirnov" or "MMD permutation"
    statistic: float
    p_value: float
    threshold: float  # the test alarms when p_value < threshold: its share of the false-alarm rate
    window_size: int
    reference_size: int

    @property
    def drift(self) -> bool:
        return self.p_value < self.threshold

    def to_json(self) -> dict:
        return {"name": self.name, "method": self.method, "statistic": self.statistic, "p_value": self.p_value,
                "threshold": self.threshold, "drift": self.drift, "window_size": self.window_size,
                "reference_size": self.reference_size}


@dataclasses.dataclass(frozen=True)
class Verdict:
    tests: list[TestResult]
    false_alarm_rate: float

    @property
    def drift(self) -> bool:
        return any(test.drift for test in self.tests)

    def moved(self) -> list[str]:
        return [test.name for test in self.tests if test.drift]

    def line(self) -> str:
        if self.drift:
            return (f"drift: {', '.join(self.moved())} moved (false-alarm rate {self.false_alarm_rate:g}, "
                    f"{len(self.tests)} tests)")
        return f"no drift: {len(self.tests)} tests within their thresholds (false-alarm rate {self.false_alarm_rate:g})"


def share(false_alarm_rate: float, tests: int) -> float:
    """Each test's threshold when `tests` tests share the rate (Bonferroni)."""
    return false_alarm_rate / max(1, tests)


def ks_test(window: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(Kolmogorov-Smirnov statistic, p-value) of two one-dimensional samples. On values with ties (sizes in
    whole pixels) the test is conservative: it alarms less often than its p-value says, never more."""
    from scipy import stats

    result = stats.ks_2samp(np.asarray(window, float), np.asarray(reference, float))
    return float(result.statistic), float(result.pvalue)


def _squared_distances(points: np.ndarray) -> np.ndarray:
    norms = np.einsum("ij,ij->i", points, points)
    return np.maximum(norms[:, None] + norms[None, :] - 2 * points @ points.T, 0)


def mmd_test(window: np.ndarray, reference: np.ndarray, permutations: int = PERMUTATIONS,
             seed: int = 0) -> tuple[float, float]:
    """(squared maximum mean discrepancy, permutation p-value) of two samples of vectors [n, d], with a Gaussian
    kernel whose width is the median distance of the pooled sample (which permuting leaves as it is, so the test
    keeps its level). The p-value counts the observed split among the permutations: never below
    1 / (permutations + 1)."""
    window, reference = np.asarray(window, np.float64), np.asarray(reference, np.float64)
    pooled = np.concatenate([window, reference])
    pooled = pooled - pooled.mean(axis=0)  # float64 distances of centred points: no cancellation
    distances = _squared_distances(pooled)
    upper = distances[np.triu_indices(len(pooled), 1)]
    width = float(np.median(upper[upper > 0])) if np.any(upper > 0) else 1.0
    kernel = np.exp(-distances / width)
    n, total = len(window), len(pooled)
    rng = np.random.default_rng(seed)
    # Each column weighs one split of the pooled sample: +1/n on the window's side, -1/m on the reference's;
    # w' K w is then the (biased) MMD^2 of that split, for every split in one matrix product.
    labels = np.zeros((total, permutations + 1), bool)
    labels[:n, 0] = True
    for column in range(1, permutations + 1):
        labels[rng.permutation(total)[:n], column] = True
    weights = np.where(labels, 1.0 / n, -1.0 / (total - n))
    statistics = np.einsum("ij,ij->j", kernel @ weights, weights)
    observed = statistics[0]
    p_value = (1 + np.count_nonzero(statistics[1:] >= observed - 1e-12)) / (permutations + 1)
    return float(observed), float(p_value)


def compare(window: dict[str, np.ndarray], reference: dict[str, np.ndarray], false_alarm_rate: float,
            vectors: frozenset[str] = frozenset(), seed: int = 0) -> Verdict:
    """One test per quantity both samples have: Kolmogorov-Smirnov for numbers, the MMD test for the names in
    `vectors` (arrays [n, d]); the false-alarm rate shared among them. A quantity with fewer than two values on
    either side is not tested."""
    names = [name for name in window if name in reference and len(window[name]) > 1 and len(reference[name]) > 1]
    threshold = share(false_alarm_rate, len(names))
    results = []
    for name in names:
        if name in vectors:
            statistic, p_value = mmd_test(window[name], reference[name], seed=seed)
            method = "MMD permutation"
        else:
            statistic, p_value = ks_test(window[name], reference[name])
            method = "Kolmogorov-Smirnov"
        results.append(TestResult(name, method, statistic, p_value, threshold, len(window[name]),
                                  len(reference[name])))
    return Verdict(results, false_alarm_rate)
