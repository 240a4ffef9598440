"""The order the workers take the test files in: the slowest first, each file's tests together and in order."""

import dataclasses

from tests import conftest
from tests.helpers import ROOT


@dataclasses.dataclass
class _Item:
    path: str
    name: str
    e2e: bool = False

    @property
    def location(self):
        return (self.path, 0, self.name)

    def get_closest_marker(self, name):
        return object() if name == "e2e" and self.e2e else None


def _paths(items):
    return [item.path for item in items]


def test_the_slowest_files_come_first_in_their_order_then_whole_runs_then_the_most_tests():
    slowest, second = conftest.SLOWEST_FILES[0], conftest.SLOWEST_FILES[1]
    items = [_Item("tests/a.py", "one"), _Item("tests/b.py", "one"), _Item("tests/b.py", "two"),
             _Item("tests/c.py", "one"), _Item("tests/c.py", "two", e2e=True),
             _Item(second, "one"), _Item(slowest, "one"), _Item(slowest, "two")]
    ordered = conftest.collection_order(items)
    assert _paths(ordered) == [slowest, slowest, second, "tests/c.py", "tests/c.py", "tests/b.py", "tests/b.py",
                               "tests/a.py"]
    assert [item.name for item in ordered if item.path == "tests/c.py"] == ["one", "two"], "a file's own order kept"
    assert sorted(map(id, ordered)) == sorted(map(id, items)), "every test once"


def test_the_files_named_slowest_exist():
    """A renamed file would silently lose its place at the front."""
    assert len(set(conftest.SLOWEST_FILES)) == len(conftest.SLOWEST_FILES)
    assert [path for path in conftest.SLOWEST_FILES if not (ROOT / path).is_file()] == []
