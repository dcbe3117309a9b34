"""The code's working directory from the host's side: what changed, taking files out, cleaning up.

The sandbox's code writes ``/mnt/data``; the host reads it afterwards. Everything there is the code's
to shape, so the host never follows a symlink (one could point at a host file), never opens anything
but a plain file (a FIFO would block), and reads no more than the size it saw.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

FileState = tuple[int, int]  # (size, mtime in ns): a file written again, even with the same bytes, counts


@dataclass(frozen=True)
class ChangedFile:
    name: str  # relative to the working directory, with "/" separators
    size: int


_libc = ctypes.CDLL(None, use_errno=True)
_MS_NOSUID, _MS_NODEV, _MNT_DETACH = 2, 4, 2


def cap_folder(folder: Path, size_mb: int, max_files: int, owner: int | None) -> bool:
    """As root: make ``folder`` a tmpfs of ``size_mb`` and ``max_files`` inodes, so the code cannot fill
    the host's disk through it. Returns whether it could (not root: no). Undo with :func:`uncap_folder`."""
    if os.geteuid() != 0:
        return False
    options = f"size={size_mb}m,nr_inodes={max_files},mode=0700"
    if owner is not None:
        options += f",uid={owner},gid={owner}"
    return _libc.mount(b"tmpfs", os.fsencode(folder), b"tmpfs", ctypes.c_ulong(_MS_NOSUID | _MS_NODEV),
                       options.encode()) == 0


def uncap_folder(folder: Path) -> None:
    """Take the tmpfs of :func:`cap_folder` away (its files with it). Never raises."""
    _libc.umount2(os.fsencode(folder), _MNT_DETACH)


def snapshot(root: Path, limit: int = 100_000) -> dict[str, FileState]:
    """The plain files under ``root`` (not through symlinks), at most ``limit`` of them."""
    found: dict[str, FileState] = {}
    for path, info in _walk(root):
        if stat.S_ISREG(info.st_mode):
            found[path.relative_to(root).as_posix()] = (info.st_size, info.st_mtime_ns)
            if len(found) >= limit:
                break
    return found


def lend_tree(root: Path, uid: int) -> dict[Path, tuple[int, int]]:
    """Give ``root`` and what is in it to a sandbox's ``uid`` for a session; returns the owners to restore.

    Links are changed themselves, never what they point to; a file with several hard links is left
    alone, since its other names may lie outside ``root`` (the code can read it, not change it).
    """
    owners: dict[Path, tuple[int, int]] = {}
    for path, info in [(root, root.lstat()), *_walk(root)]:
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            continue
        with contextlib.suppress(OSError):
            os.lchown(path, uid, uid)
            owners[path] = (info.st_uid, info.st_gid)
    return owners


def return_tree(root: Path, owners: dict[Path, tuple[int, int]], uid: int) -> None:
    """Undo :func:`lend_tree`: each lent entry back to its owner; what the code made, to ``root``'s owner.

    Only entries still owned by the sandbox's ``uid`` are touched (never through links). Never raises.
    """
    default = owners.get(root)
    if default is None:
        return
    for path, info in [(root, root.lstat()), *_walk(root)]:
        if info.st_uid == uid:
            with contextlib.suppress(OSError):
                os.lchown(path, *owners.get(path, default))


def remove_tree(root: Path) -> None:
    """Delete ``root`` whatever the code made of it: any depth, folders it locked (mode 000). Never raises.

    Iterative, so a tree deeper than Python's recursion limit goes too; a folder that cannot be
    listed or emptied is opened up (chmod) first.
    """
    try:
        if not root.is_dir() or root.is_symlink():
            root.unlink(missing_ok=True)
            return
    except OSError:
        return
    folders = [root]
    for path, info in _walk(root, unlock=True):
        if stat.S_ISDIR(info.st_mode):
            folders.append(path)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    for folder in reversed(folders):  # deepest last found, so children go before their parents
        with contextlib.suppress(OSError):
            folder.rmdir()


def _walk(root: Path, unlock: bool = False) -> Iterator[tuple[Path, os.stat_result]]:
    """Every entry under ``root`` with its ``lstat``, parents before children, without recursion or links."""
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            if unlock:
                os.chmod(directory, 0o700)
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            path = Path(entry.path)
            yield path, info
            if stat.S_ISDIR(info.st_mode):
                stack.append(path)


def changes(before: dict[str, FileState], after: dict[str, FileState]) -> list[ChangedFile]:
    """Files that are new in ``after`` or were written since ``before``, by name."""
    return [ChangedFile(name, state[0]) for name, state in sorted(after.items()) if before.get(name) != state]


@dataclass(frozen=True)
class Incoming:
    """A file to put into the working directory: ``source``, opened beneath ``root`` when it came in a folder."""

    source: Path
    root: Path | None
    name: str  # where it goes, "/"-separated; taken already means "name (2)"
    size: int


def copy_in(destination: Path, files: list[Incoming], owner: int | None) -> list[str]:
    """Put files into a folder the sandbox's code controls; returns the names they got there.

    Nothing already there is followed or overwritten: every folder and file is created new
    (``O_EXCL``, no symlinks on the way), and a name already taken, whatever it is (a link the code
    planted, a pipe, a file of the user's), gets `` (2)``. Files and folders are given to ``owner``
    through their descriptors. Sources in a folder are opened beneath it, following no link, and
    never block (a pipe swapped in is refused). Raises ``OSError``.
    """
    made: dict[str, str] = {}  # planned folder -> the folder it became, in this call
    names = []
    top = os.open(destination, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for file in files:
            *folders, name = file.name.split("/")
            fd, placed, planned = os.dup(top), [], ""
            try:
                for folder in folders:
                    planned += "/" + folder
                    if planned not in made:
                        made[planned] = _create(fd, folder, owner, directory=True)
                    placed.append(made[planned])
                    inner = os.open(made[planned], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                    dir_fd=fd)
                    os.close(fd)
                    fd = inner
                placed.append(_create(fd, name, owner, source=file))
            finally:
                os.close(fd)
            names.append("/".join(placed))
    finally:
        os.close(top)
    return names


def _create(folder: int, name: str, owner: int | None, *, directory: bool = False,
            source: Incoming | None = None) -> str:
    """Make ``name`` (or ``name (2)``...) new in ``folder``: a directory, or a copy of ``source``."""
    for n in range(1, 1000):
        candidate = name if n == 1 else _numbered(name, n)
        try:
            if directory:
                os.mkdir(candidate, 0o700, dir_fd=folder)
                fd = os.open(candidate, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
            else:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                             dir_fd=folder)
        except FileExistsError:
            continue
        try:
            if owner is not None:
                os.fchown(fd, owner, owner)
            if source is not None:
                with os.fdopen(os.dup(fd), "wb") as out:
                    _copy_from(source, out)
        finally:
            os.close(fd)
        return candidate
    raise FileExistsError(f"no free name for {name}")


def _numbered(name: str, n: int) -> str:
    """``data (2).csv``, kept within 255 bytes by shortening the stem."""
    stem, dot, ext = name.rpartition(".") if "." in name.strip(".") else (name, "", "")
    suffix = f" ({n}){dot}{ext}"
    while len((stem + suffix).encode()) > 255:
        stem = stem[:-1]
    return stem + suffix


def _copy_from(source: Incoming, out: Any) -> None:
    if source.root is not None:
        fd = _open_beneath(source.root, source.source.relative_to(source.root).as_posix())
    else:
        fd = os.open(source.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{source.source} is no longer a plain file")
        remaining = source.size  # no more than was checked against the limits
        while remaining > 0 and (chunk := src.read(min(remaining, 1 << 20))):
            out.write(chunk)
            remaining -= len(chunk)


def copy_out(root: Path, name: str, destination: Path, max_bytes: int) -> int:
    """Copy ``root/name`` to ``destination`` (owner-only; its folder must exist) if it is still a plain file.

    Returns the bytes copied.
    Raises ``OSError`` when it is not (a symlink or FIFO swapped in since the snapshot) or is gone.
    """
    fd = _open_beneath(root, name)
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{name} is not a plain file")
        copied = 0
        out = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(out, "wb") as dst:
            while copied < max_bytes and (chunk := src.read(min(1 << 20, max_bytes - copied))):
                dst.write(chunk)
                copied += len(chunk)
        return copied


def _open_beneath(root: Path, name: str) -> int:
    """Open ``root/name`` one component at a time, following no symlink on the way (not only the last)."""
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    *folders, last = name.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | flags)
    try:
        for folder in folders:
            inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | flags, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(last, os.O_RDONLY | os.O_NONBLOCK | flags, dir_fd=fd)
    finally:
        os.close(fd)
