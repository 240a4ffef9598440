"""Traffic records: only the origins the contract names."""

import pytest

from traffic.records import TrafficRecord


def test_a_record_of_another_origin_is_refused():
    with pytest.raises(ValueError, match="origin"):
        TrafficRecord(b"x", 0.5, 1, 0, "r", "elsewhere")
