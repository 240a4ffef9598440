"""How far an accuracy measured on a few images can be from the model's true one, and whether two models
scored on the same images differ by more than chance.

Exact (Clopper-Pearson) intervals, not TFMA's bootstrap: on the few dozen images
a small eval split holds, resampling them gives an interval of only as many
distinct values as there are images, and a normal approximation runs past 1.0
for a good model. McNemar's exact test compares two models on the same images by
the ones only one of them gets right, which is what differs between them; the
images both get right or both get wrong say nothing about which is better.
"""

from __future__ import annotations

from scipy import stats

CONFIDENCE = 0.95
# A difference with a two-sided p-value at or above this is within the noise of the images.
SIGNIFICANCE = 0.05


def accuracy_interval(correct: int, images: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact two-sided interval of an accuracy of `correct` of `images`: (low, high)."""
    if images <= 0:
        return 0.0, 1.0
    if not 0 <= correct <= images:
        raise ValueError(f"correct must be in [0, {images}], got {correct}")
    tail = (1 - confidence) / 2
    low = 0.0 if correct == 0 else float(stats.beta.ppf(tail, correct, images - correct + 1))
    high = 1.0 if correct == images else float(stats.beta.ppf(1 - tail, correct + 1, images - correct))
    return low, high


def mcnemar_p_value(only_candidate_right: int, only_baseline_right: int) -> float:
    """The exact two-sided p-value of McNemar's test on the images where exactly one model is right."""
    discordant = only_candidate_right + only_baseline_right
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(only_candidate_right, discordant, 0.5).pvalue)


def format_accuracy(accuracy: float, images: int) -> str:
    """'0.9262 [0.8647, 0.9657] of 122 images'."""
    low, high = accuracy_interval(round(accuracy * images), images)
    return f"{accuracy:.4f} [{low:.4f}, {high:.4f}] of {images} images"
