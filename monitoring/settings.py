"""What a drift check is asked to do: its settings and their defaults, importable without the libraries it uses
(the command line builds its flags from them at every start)."""

from __future__ import annotations

import dataclasses

DEFAULT_FALSE_ALARM_RATE = 0.05
PERMUTATIONS = 999  # of the features' test: the smallest p-value it can give is 1 / (PERMUTATIONS + 1)
TESTS = 6  # a check's tests at most (monitoring.measure: height, width, brightness, saturation, score, features)
# At or below this, the false-alarm rate's share of each test (Bonferroni) is at or below the features' test's
# smallest p-value, which alarms only below its share: that test could never alarm, however far the traffic moved.
MIN_FALSE_ALARM_RATE = TESTS / (PERMUTATIONS + 1)
MIN_WINDOW = 30
MIN_REFERENCE = 5  # held-out images a check needs at least: a --sample below it could never be checked


@dataclasses.dataclass(frozen=True)
class MonitorSettings:
    window: int = 10_000  # the newest images at most
    since_ms: int | None = None  # only images at or after this Unix time (ms)
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE
    sample: int = 1000  # images of the window (and of the reference) the model measures
    min_window: int = MIN_WINDOW
    queue: bool = True  # on drift, export the window's images for labels
    seed: int = 0

    def __post_init__(self):
        if not MIN_FALSE_ALARM_RATE < self.false_alarm_rate < 1:
            raise ValueError(f"false_alarm_rate must be above {MIN_FALSE_ALARM_RATE:g} and below 1, "
                             f"got {self.false_alarm_rate!r}")
