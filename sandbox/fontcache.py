"""Matplotlib's font list, built once and shared read-only by every kernel.

``import matplotlib.pyplot`` looks for ``fontlist-v<N>.json`` in ``MPLCONFIGDIR`` and, when it is
missing, scans the system's fonts and writes it there. A kernel's ``MPLCONFIGDIR`` is in its private
``/tmp``, so every kernel would scan again (about 0.2 s of each preload). Instead the list is built
once per interpreter, by that interpreter *under the sandbox* (so it names the fonts a kernel sees,
at the paths it sees them), kept in the user's cache folder like matplotlib's own, and handed to
each kernel read-only: bind-mounted by bubblewrap, copied (owned by us, mode 0444) for the other
tiers. A kernel cannot change what another kernel reads. Delete the folder to have it rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path
from typing import BinaryIO

from .errors import SandboxUnavailableError
from .interpreter import find_interpreter
from .isolation import run_once
from .settings import SandboxSettings

MAX_FONT_LIST_BYTES = 16 * 1024 * 1024  # a list of a few thousand fonts is a few MB
_lock = threading.Lock()
_missing: set[str] = set()  # interpreters whose kernels have no matplotlib (asked once per process)


def cache_root() -> Path:
    """Where the shared font lists are kept: ``$XDG_CACHE_HOME/glm-agent-sandbox`` (or ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glm-agent-sandbox"


def font_list(tier: str, settings: SandboxSettings) -> Path | None:
    """The shared font list for kernels of ``settings.python``, built now under ``tier`` if there is
    none yet; ``None`` when the interpreter has no matplotlib or the list cannot be built."""
    try:
        python = find_interpreter(settings.python)
    except SandboxUnavailableError:
        return None  # the kernel's own start says why
    key = json.dumps([os.path.realpath(python.executable), python.version, list(python.paths)])
    folder = cache_root() / f"matplotlib-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    with _lock:
        found = sorted(folder.glob("fontlist-v*.json"))
        if found:
            return found[-1]
        if key in _missing:
            return None
        built = _build(tier, settings.python, folder)
        if built is None:
            _missing.add(key)
        return built


def _build(tier: str, python: str | None, folder: Path) -> Path | None:
    """Have matplotlib write its font list in a one-off sandboxed run, and keep it in ``folder``."""
    executable = find_interpreter(python).executable

    def command(data: str) -> list[str]:
        code = f"import os\nos.environ['MPLCONFIGDIR'] = {data!r}\nimport matplotlib.font_manager"
        return [executable, "-I", "-B", "-c", code]

    try:
        with run_once(tier, python, command, timeout=120) as (done, data):
            if done.returncode != 0:
                return None  # no matplotlib: kernels have nothing to share
            for made in data.glob("fontlist-v*.json"):
                folder.mkdir(parents=True, exist_ok=True)
                kept = folder / made.name
                partial = folder / f".{made.name}.{os.getpid()}"
                with _open_plain(made) as source, open(partial, "wb") as target:
                    shutil.copyfileobj(source, target)
                os.chmod(partial, 0o444)
                os.replace(partial, kept)  # whole, even when two processes build at once
                return kept
    except (OSError, subprocess.SubprocessError, SandboxUnavailableError):
        return None
    return None


def copy_font_list(source: Path, config_dir: Path, uid: int | None) -> None:
    """Put a read-only copy of the font list in a new ``MPLCONFIGDIR`` (tiers without a mount namespace).

    Done only while the folder does not exist yet (before any code ran in the kernel): a folder the
    kernel made, or a link it planted, is left alone.
    """
    try:
        config_dir.mkdir(mode=0o700)
    except FileExistsError:
        return
    if uid is not None:
        os.chown(config_dir, uid, uid)
    target = config_dir / source.name
    with _open_plain(source) as src, open(target, "xb") as copy:
        shutil.copyfileobj(src, copy)
    os.chmod(target, 0o444)  # ours: the kernel's uid may read it, not change it


def _open_plain(path: Path) -> BinaryIO:
    """A regular file of at most ``MAX_FONT_LIST_BYTES``, opened for reading without following a link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    info = os.fstat(fd)
    if not (stat.S_ISREG(info.st_mode) and info.st_size <= MAX_FONT_LIST_BYTES):
        os.close(fd)
        raise OSError(f"{path} is not a font list")
    return os.fdopen(fd, "rb")
