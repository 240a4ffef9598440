"""The files conftest hands out first are still there: a renamed scenario would fall back to the end of the queue,
where it keeps one worker busy after the other is done."""

from tests import conftest
from tests.helpers import ROOT


def test_every_file_named_to_run_first_exists():
    missing = [name for name in conftest.LONGEST_FIRST if not (ROOT / "tests" / name).is_file()]
    assert missing == []
