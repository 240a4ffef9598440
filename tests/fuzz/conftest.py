"""Property-based fuzzing (Hypothesis): random and mutated inputs, each of which must end in an outcome the code
names. CI runs a bounded number of inputs per target (FUZZ_EXAMPLES scales them all; docs/tests.md gives the
figures of a longer run). Hypothesis keeps failing inputs in .hypothesis/ and replays them first."""

import os

from hypothesis import HealthCheck, settings

SCALE = float(os.environ.get("FUZZ_EXAMPLES_SCALE", "1"))


def examples(ci_count: int) -> int:
    """The number of inputs a target tries: its CI count, times FUZZ_EXAMPLES_SCALE."""
    return max(1, int(ci_count * SCALE))


settings.register_profile("fuzz", deadline=None, derandomize=os.environ.get("FUZZ_RANDOM") is None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])
settings.load_profile("fuzz")
