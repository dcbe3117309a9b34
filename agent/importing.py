"""``import_module_or_file``: a user's module named on the command line, as a module name or a ``.py`` file.

``--tools-module my_tools.py`` and ``--scorer python:my_scorer.py:score`` both name code of the user's;
one way of loading it keeps their rules the same: a ``.py`` path (or any existing path) is executed as a
file, anything else is imported by name with the current folder on the path, as ``python -m`` would.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType


def import_module_or_file(where: str, *, prefix: str) -> ModuleType:
    """The module ``where`` names; raises ``FileNotFoundError`` for a missing ``.py`` file, and whatever the
    module raises while it runs (the callers turn both into their own one-sentence errors).

    ``prefix`` names the module made from a file (``prefix + stem``), so it cannot shadow an installed one.
    """
    path = Path(where)
    if path.suffix == ".py" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"{where} does not exist")
        spec = importlib.util.spec_from_file_location(f"{prefix}{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:  # `agent` is a console script: the current folder is not on the path
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(where)
