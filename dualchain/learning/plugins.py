"""User plug-ins named by import path, ``"pkg.module:name"`` (docs/plugins.md).

A testbed can bring its own model factory, dataset loader and aggregation rule, the way a Flower
user brings a ClientApp. This module only finds the object a path names and turns every way that
can fail into a ``PluginError`` with a one-line reason; what each kind of plug-in must return is
checked where it is used (``models.build_model``, ``datasets.load_dataset``,
``aggregation.plugin_aggregate``).
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class PluginError(ValueError):
    """A plug-in path that does not import, or a plug-in that returned something unusable."""


def is_plugin(name: str) -> bool:
    """Whether ``name`` is an import path (``pkg.mod:attr``) rather than a built-in's name."""
    return ":" in name


def check_spec(spec: str, what: str) -> None:
    """The syntax alone (no import): ``pkg.module:name``."""
    if not isinstance(spec, str) or not _SPEC.match(spec):
        raise PluginError(f"{what} {spec!r}: not an import path of the form pkg.module:name")


def load_object(spec: str, what: str) -> Any:
    """The callable ``spec`` names; ``what`` ("model", "dataset", "aggregator") heads errors."""
    check_spec(spec, what)
    module_name, _, attribute = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"{what} {spec!r}: cannot import {module_name} ({_one_line(exc)}); "
                          "is its package installed or on PYTHONPATH?") from None
    except Exception as exc:  # the user's module failed while it was imported
        raise PluginError(f"{what} {spec!r}: importing {module_name} raised "
                          f"{type(exc).__name__}: {_one_line(exc)}") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"{what} {spec!r}: {module_name} has no {attribute}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PluginError(f"{what} {spec!r}: {attribute} is a {type(obj).__name__}, "
                          "not a callable")
    return obj


def call(spec: str, what: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``; an exception inside the user's code becomes a one-line PluginError."""
    try:
        return fn(*args)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"{what} {spec!r} raised {type(exc).__name__}: "
                          f"{_one_line(exc)}") from None


def import_root(spec: str) -> Path | None:
    """The ``sys.path`` folder ``spec``'s top-level package was imported from (what a launcher
    puts on its processes' PYTHONPATH); None for an installed or built-in module."""
    top = spec.partition(":")[0].split(".")[0]
    module = sys.modules.get(top)
    location = getattr(module, "__file__", None)
    if location is None:
        return None
    path = Path(location).resolve()
    root = path.parent.parent if path.name == "__init__.py" else path.parent
    return None if "site-packages" in root.parts else root


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__
