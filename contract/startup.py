"""A process's first import of TensorFlow, TFX and Beam, made without the cyclic garbage collector's passes.

Those imports create about a million objects that live as long as the process. Python's collector runs a pass
each time 700 more container objects exist than before, and its older generations walk everything that survived:
during the imports, those passes are about a fifth of a command's start-up and of each Kubeflow task's
(docs/performance.md, "Starting a process: imports"), and after them each full pass walks the libraries' objects
again, for nothing. So the collector is off while they load, and what they left is frozen (gc.freeze: moved to a
generation no pass walks) before it is back on. The objects of a module import are not garbage, and an import
leaves next to no cycles behind, so memory is what it was; everything created later is collected as before.

Keras 3, which TensorFlow 2.16 loads as it loads, imports matplotlib's pyplot, scikit-learn, IPython and pandas
whenever they are installed (the stack installs them: TFX, TFMA and the report need some), each in a `try` that
leaves a feature off when the library is missing: image-gallery plots, scikit-learn wrappers, notebook display of
saved files, DataFrames as training data. The project uses none of them through Keras, and the imports are about a
sixth of a process's start-up (1.2 s of 7.4 s of CPU for a Kubeflow task's imports on an AMD EPYC, docs/
performance.md). So while the stack loads, Keras alone finds them missing; every other importer, and Keras itself
after the start-up, gets them as usual (a module something else loaded first is Keras's too).

And `root_logger_kept`: imports that leave the root logger as it was, for a process that loads the libraries before
the program that sets up its logging runs (a warm task process, orchestration.engines.warm_zygote).
"""

from __future__ import annotations

import contextlib
import gc
import importlib.abc
import logging
import sys
from collections.abc import Iterator

HIDDEN_FROM_KERAS = frozenset({"matplotlib", "sklearn", "IPython", "pandas"})
_IMPORT_MACHINERY = frozenset({"importlib._bootstrap", "importlib._bootstrap_external", __name__})


class _KerasOptionals(importlib.abc.MetaPathFinder):
    """Answers Keras's own imports of HIDDEN_FROM_KERAS with ModuleNotFoundError (which Keras catches); asks
    nothing of any other import."""

    def find_spec(self, name, path, target=None):
        if name in HIDDEN_FROM_KERAS and _importer().split(".")[0] == "keras":
            raise ModuleNotFoundError(f"No module named {name!r} (not loaded for Keras while the libraries load)",
                                      name=name)
        return None


def _importer() -> str:
    """The module whose code runs the import statement: the first frame outside the import machinery."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") in _IMPORT_MACHINERY:
        frame = frame.f_back
    return frame.f_globals.get("__name__") or "" if frame is not None else ""


@contextlib.contextmanager
def loading_libraries() -> Iterator[None]:
    """Around the imports of a process's entry point (a command, a Kubeflow task). Only a first load of the stack
    (the process's modules at least doubled: from a few hundred to thousands) is frozen; where it was loaded already
    (a second command in one process, a test's) the objects alive may hold garbage of the work done before, which
    only a pass can free."""
    if not gc.isenabled():  # nested, or the process chose to run without it
        yield
        return
    loaded = len(sys.modules)
    finder = _KerasOptionals()
    gc.disable()
    try:
        sys.meta_path.insert(0, finder)
        yield
    finally:
        # On first: a Ctrl-C handled between the two calls would otherwise leave it off for good (a later block
        # takes an off collector for the process's own choice).
        gc.enable()
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
        if len(sys.modules) >= 2 * loaded:
            gc.freeze()


@contextlib.contextmanager
def root_logger_kept() -> Iterator[None]:
    """The root logger's handlers and level as they were before the block. A library that logs as it loads (TFMA
    through absl) gives the root logger a handler on stderr (logging.basicConfig) if it has none, and a program
    that sets up its own logging later (kfp's executor) does so only where there is none."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
