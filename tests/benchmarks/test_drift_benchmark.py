"""The drift benchmark's cheap window: distinct bytes, the same pixels."""

import hashlib
import io

import numpy as np
from PIL import Image

from benchmarks import drift
from monitoring import looks


def test_the_timed_windows_copies_are_distinct_files_that_decode_to_the_same_pixels():
    originals = looks.images("cartoon", 2)
    copies = drift.distinct_copies(originals, 5)
    assert len({hashlib.sha256(c).hexdigest() for c in copies}) == 5
    for index, copy in enumerate(copies):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(copy))),
                                      np.asarray(Image.open(io.BytesIO(originals[index % 2]))))


def test_the_exact_interval_of_an_alarm_count_holds_the_count():
    low, high = drift._clopper_pearson(2, 40)
    assert low < 2 / 40 < high and 0 < low and high < 0.2
    assert drift._clopper_pearson(0, 40)[0] == 0.0
