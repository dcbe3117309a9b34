"""The user's files in: checked, named safely and copied, and described to the model.

``collect_files`` checks every path first (exists, readable, a plain file or a folder of plain files,
no symlinks or devices, within the policy's ``[files]`` limits) and raises :class:`FileInputError`
naming the first problem, before anything is copied. A tool that takes files then copies them
(the python tool: ``sandbox.workdir.copy_in``); ``listing`` names them for the model (see
``agent.documents``).

>>> files = collect_files(["data.csv"], FileSettings())      # doctest: +SKIP
>>> listing(files, ["/mnt/data/data.csv"])                   # doctest: +SKIP
'/mnt/data/data.csv (text/csv, 1.2 KB)'
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from .errors import FileInputError
from .policy import FileSettings

MB = 1024 * 1024
_UNSAFE = set('/\\:*?"<>|')
_MAX_NAME_BYTES = 255


@dataclass(frozen=True)
class InputFile:
    """One file the user hands in: where it is on the host and the name it gets in ``/mnt/data``."""

    source: Path
    name: str  # a relative POSIX path, each part sanitised
    size: int
    media_type: str
    root: Path | None = None  # the folder it was found in; the copy opens it beneath that, following no link


def collect_files(paths: Iterable[str | os.PathLike[str]], settings: FileSettings) -> list[InputFile]:
    """Check the paths (files or folders) and name them safely; raises before anything is copied.

    Two files may get one name here; the folder they are copied into numbers the second (``data (2).csv``).
    """
    files: list[InputFile] = []
    for given in paths:
        path = Path(given).expanduser()
        mode = _lstat(path, given).st_mode
        if stat.S_ISDIR(mode):
            files += _folder(path, given, settings.max_files - len(files))
        else:
            _require_plain(path, mode, given)
            files.append(_input(path, sanitise_name(path.name)))
        if len(files) > settings.max_files:
            raise FileInputError(f"More than {settings.max_files} files were given (counting the files inside "
                                 f"folders, up to {given}): pass fewer, or raise [files] max_files in the policy.")
    for file in files:
        if file.size > settings.max_file_mb * MB:
            raise FileInputError(f"{file.source} is {_size(file.size)}, over the {settings.max_file_mb:g} MB limit "
                                 "for one file: raise [files] max_file_mb in the policy to take it.")
    total = sum(file.size for file in files)
    if total > settings.max_total_mb * MB:
        raise FileInputError(f"The files come to {_size(total)}, over the {settings.max_total_mb:g} MB limit: "
                             "pass fewer, or raise [files] max_total_mb in the policy.")
    return files


def private_dir(path: Path) -> Path:
    """``path`` as a folder, each part this call creates readable by the owner alone (0700)."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another session
            folder.mkdir(mode=0o700)
    return path


def write_private(path: Path, data: bytes) -> Path:
    """Write a new file readable by the owner alone (0600), in a private folder if it must be made."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return path


def listing(files: list[InputFile], seen_as: list[str]) -> str:
    """Each file as the code sees it, with its type and size: ``/mnt/data/data.csv (text/csv, 1.2 KB)``."""
    return "\n".join(f"{path} ({file.media_type}, {_size(file.size)})" for file, path in zip(files, seen_as))


def sanitise_name(name: str) -> str:
    """One path component that is safe on any filesystem and in a shell: no separators, controls or dots only."""
    cleaned = "".join("_" if ch in _UNSAFE or (unicodedata.category(ch)[0] in "CZ" and ch != " ") else ch
                      for ch in unicodedata.normalize("NFC", name))  # controls, odd spaces, line separators
    cleaned = cleaned.strip().lstrip(".-").strip() or "file"
    while len(cleaned.encode()) > _MAX_NAME_BYTES:  # keep the extension, shorten the stem
        stem, dot, ext = cleaned.rpartition(".")
        cleaned = f"{stem[:-1]}{dot}{ext}" if stem and len(ext) < 16 else cleaned[:-1]
    return cleaned


def media_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


def _folder(root: Path, given: object, room: int) -> list[InputFile]:
    """The files in a folder, found without following links; stops once more than ``room`` are found."""
    top = sanitise_name(root.resolve().name)
    real_root = root.resolve()
    found: list[InputFile] = []
    for directory, subdirs, names in os.walk(root, followlinks=False, onerror=_walk_error):
        here = Path(directory)
        for entry in sorted(subdirs) + sorted(names):  # a symlinked folder is listed (and refused) here
            path = here / entry
            mode = _lstat(path, path).st_mode
            if stat.S_ISDIR(mode):
                continue
            _require_plain(path, mode, path)
            if not path.resolve().is_relative_to(real_root):
                raise FileInputError(f"{path} lies outside the folder {given} it was found in: it is not taken.")
            parts = [sanitise_name(part) for part in path.relative_to(root).parts]
            found.append(_input(path, str(PurePosixPath(top, *parts)), root))
            if len(found) > room:  # the caller refuses: no need to walk the rest
                return found
    return found


def _walk_error(exc: OSError) -> None:
    raise FileInputError(f"The folder {exc.filename} cannot be read ({exc.strerror}): check its permissions.")


def _lstat(path: Path, given: object) -> os.stat_result:
    try:
        return path.lstat()
    except FileNotFoundError:
        raise FileInputError(f"{given} does not exist: check the path.") from None
    except OSError as exc:
        raise FileInputError(f"{given} cannot be read ({exc.strerror}): check the path and its permissions.") from None


def _require_plain(path: Path, mode: int, given: object) -> None:
    if stat.S_ISLNK(mode):
        raise FileInputError(f"{given} is a symbolic link: pass the file it points to ({os.path.realpath(path)}) "
                             "instead.")
    if not stat.S_ISREG(mode):
        raise FileInputError(f"{given} is not a plain file (a device, pipe or socket): only files and folders "
                             "can be handed in.")
    if not os.access(path, os.R_OK):
        raise FileInputError(f"{given} cannot be read (permission denied): check its permissions.")


def _input(path: Path, name: str, root: Path | None = None) -> InputFile:
    return InputFile(source=path.absolute(), name=name, size=path.lstat().st_size, media_type=media_type(name),
                     root=root.absolute() if root is not None else None)


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
