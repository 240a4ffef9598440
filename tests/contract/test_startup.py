"""contract.startup: a process's first load of the libraries without collector passes, then frozen."""

import gc
import subprocess
import sys

import pytest

from contract import startup
from tests.helpers import ROOT

FIRST_LOAD = """
import gc, sys
from contract import startup
before = len(sys.modules)
with startup.loading_libraries():
    assert not gc.isenabled()
    import numpy
print(len(sys.modules) >= 2 * before, gc.isenabled(), gc.get_freeze_count() > 0)
"""


def test_a_first_load_runs_without_the_collector_and_leaves_what_it_loaded_frozen():
    result = subprocess.run([sys.executable, "-c", FIRST_LOAD], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True"]


@pytest.fixture
def collector():
    """The collector on and nothing frozen, as the test found it afterwards."""
    was = gc.isenabled()
    frozen = gc.get_freeze_count()
    gc.enable()
    yield frozen
    if frozen == 0:
        gc.unfreeze()
    (gc.enable if was else gc.disable)()


def test_modules_already_loaded_are_not_frozen_with_the_garbage_of_earlier_work(collector):
    with startup.loading_libraries():
        assert not gc.isenabled()
        import json  # noqa: F401 - loaded long before: the process's modules do not grow
    assert gc.isenabled() and gc.get_freeze_count() == collector


def test_the_collector_comes_back_after_a_failed_import(collector):
    with pytest.raises(ModuleNotFoundError):
        with startup.loading_libraries():
            import a_module_that_does_not_exist  # noqa: F401
    assert gc.isenabled()


def test_a_collector_the_process_turned_off_stays_off(collector):
    gc.disable()
    with startup.loading_libraries():
        pass
    assert not gc.isenabled()


def test_a_ctrl_c_as_the_block_ends_leaves_the_collector_on(collector, monkeypatch):
    """Ctrl-C handled inside the block's clean-up (here: raised by the freeze) must not leave the collector off for
    the rest of the process: a later block would take that for the process's own choice."""
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(gc, "freeze", interrupted)
    loaded = dict(sys.modules)
    with pytest.raises(KeyboardInterrupt):
        with startup.loading_libraries():
            sys.modules.update({f"stand_in_module_{i}": sys for i in range(len(loaded))})  # the count doubles
    for i in range(len(loaded)):
        del sys.modules[f"stand_in_module_{i}"]
    assert gc.isenabled()


def test_while_the_libraries_load_keras_alone_finds_its_optional_libraries_missing(collector, tmp_path, monkeypatch):
    """Keras imports pyplot, scikit-learn, IPython and pandas if installed, each in a try; while the stack loads,
    its own imports of them fail as if they were not, anyone else's load them, and afterwards Keras's load too."""
    (tmp_path / "optional_to_keras.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(startup, "HIDDEN_FROM_KERAS", startup.HIDDEN_FROM_KERAS | {"optional_to_keras"})
    keras_module = {"__name__": "keras.src.wrappers.fixes"}
    with startup.loading_libraries():
        with pytest.raises(ModuleNotFoundError, match="optional_to_keras"):
            exec("import optional_to_keras", dict(keras_module))
        assert "optional_to_keras" not in sys.modules
        exec("import optional_to_keras", {"__name__": "apache_beam.typehints"})
        assert sys.modules["optional_to_keras"].LOADED
        del sys.modules["optional_to_keras"]
    exec("import optional_to_keras", dict(keras_module))  # the start-up is over
    assert sys.modules.pop("optional_to_keras").LOADED
    assert all(not isinstance(finder, startup._KerasOptionals) for finder in sys.meta_path)
