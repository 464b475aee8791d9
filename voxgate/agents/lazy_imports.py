"""Heavy modules a worker never uses, loaded only if something touches them.

faster-whisper imports PyAV at import time for decoding audio *files*; workers hand
it numpy arrays and never decode a file, yet PyAV and its FFmpeg libraries cost
~25 MB of RSS in every worker. Importing this module first (``worker.py`` does)
puts a stand-in module in its place: the real PyAV loads on the first attribute
access, so nothing breaks if some path does use it.

Importing this module has that effect on purpose: it must happen before anything
imports faster-whisper, and an import is the only thing that reliably runs first.
(``importlib.util.LazyLoader`` does not do here: on Python 3.11 a plain ``import``
of an already-present lazy module reads its ``__spec__`` and so loads it.)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

DEFERRED = ("av",)


class DeferredModule(types.ModuleType):
    """Stands in for a module until one of its attributes is used."""

    def __getattr__(self, attr: str) -> Any:
        # Only called for attributes the stand-in does not have: the module's own.
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        return getattr(real, attr)


def defer(name: str) -> bool:
    """Make ``import name`` return a :class:`DeferredModule`; False if not possible."""
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return False
    sys.modules[name] = DeferredModule(name)
    return True


def is_loaded(name: str) -> bool:
    """Whether ``name`` is imported for real (not just deferred)."""
    module = sys.modules.get(name)
    return module is not None and not isinstance(module, DeferredModule)


for _name in DEFERRED:
    defer(_name)
