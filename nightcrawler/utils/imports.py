"""Importing a user's own modules (the config's ``IMPORTS``) so that what they register is available."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType


def import_modules(names: Iterable[str]) -> list[ModuleType]:
    """Imports every entry: a module name (``my_lab.models``, found on ``sys.path``) or a ``.py`` file path
    (loaded under its file stem; importing twice returns the module already loaded).

    Raises ImportError naming the entry that failed. Module names are the robust choice for multi-process
    runs: spawned processes import them again by name.
    """
    modules = []
    for name in names:
        name = str(name).strip()
        if not name:
            continue
        if name.endswith(".py"):
            modules.append(_import_file(Path(name)))
            continue
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:
            raise ImportError(f"IMPORTS entry {name!r} cannot be imported: {exc}") from exc
    return modules


def _import_file(path: Path) -> ModuleType:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ImportError(f"IMPORTS entry {str(path)!r}: no such file")
    loaded = sys.modules.get(path.stem)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path:
        return loaded
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"IMPORTS entry {str(path)!r} is not a loadable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[path.stem]
        raise
    return module
