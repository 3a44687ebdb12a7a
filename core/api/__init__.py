"""``fuse.api``, the old name of ``fuse.base``: kept so that code written against it still imports.

``fuse.api.<module>`` is ``fuse.base.<module>`` itself (the same module object, so classes such as FuseError stay one
class), bound the first time it is imported. New code imports ``fuse`` (the public API,
``fuse.__all__``) or ``fuse.base``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from fuse.base import *  # noqa: F401,F403  (the package's own names)


class _OldName(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``fuse.api.X`` and hands back ``fuse.base.X``."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name.startswith(__name__ + ".") else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        real = importlib.import_module("fuse.base." + module.__name__[len(__name__) + 1:])
        sys.modules[module.__name__] = real  # the import system returns what sys.modules holds


if not any(isinstance(f, _OldName) for f in sys.meta_path):
    sys.meta_path.insert(0, _OldName())
