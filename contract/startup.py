"""A process's first import of TensorFlow, TFX and Beam, made without the cyclic garbage collector's passes.

Those imports create about a million objects that live as long as the process. Python's collector runs a pass
each time 700 more container objects exist than before, and its older generations walk everything that survived:
during the imports, those passes are about a fifth of a command's start-up and of each Kubeflow task's
(docs/performance.md, "Starting a process: imports"), and after them each full pass walks the libraries' objects
again, for nothing. So the collector is off while they load, and what they left is frozen (gc.freeze: moved to a
generation no pass walks) before it is back on. The objects of a module import are not garbage, and an import
leaves next to no cycles behind, so memory is what it was; everything created later is collected as before.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator


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
    gc.disable()
    try:
        yield
    finally:
        # On first: a Ctrl-C handled between the two calls would otherwise leave it off for good (a later block
        # takes an off collector for the process's own choice).
        gc.enable()
        if len(sys.modules) >= 2 * loaded:
            gc.freeze()
