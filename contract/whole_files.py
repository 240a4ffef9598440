"""A local file replaced whole or not at all: written under a temporary name beside it, then renamed onto it. A
reader never finds half a file, a failed or killed write leaves what was there, and a link at the path is replaced,
never written through. The temporary names hold the writing process's id, so that a later write into the folder
removes what a killed one left behind (the base weights `base-weights` writes, `predict`'s contact sheets)."""

from __future__ import annotations

import os
import pathlib
import re
import secrets
import time
from typing import Callable

_SUFFIX = ".tmp"
_LEFT_FOR = 3600  # seconds a killed write's file stays: a process of that id on another host may still be writing


def _new_temporary(folder: pathlib.Path, prefix: str) -> pathlib.Path:
    """A file made here under a name nothing else holds (a link or a folder of that name is never written through),
    with the permissions the user's umask gives a new file (the file it becomes keeps them); short, as the
    name given may be as long as allowed."""
    for _ in range(100):
        made = folder / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}{_SUFFIX}"
        try:
            os.close(os.open(made, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666))
            return made
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


def _remove_left_behind(folder: pathlib.Path, prefix: str) -> None:
    """The temporary files of writes into `folder` killed before their rename: their process is gone and they have
    not changed for an hour (a shared folder's writer may be a process on another host)."""
    try:
        left = [entry for entry in os.scandir(folder) if entry.name.startswith(prefix)
                and entry.name.endswith(_SUFFIX) and entry.is_file(follow_symlinks=False)]
    except OSError:
        return
    for entry in left:
        pid = entry.name[len(prefix):-len(_SUFFIX)].split("-", 1)[0]
        if not re.fullmatch("[0-9]{1,12}", pid) or int(pid) == os.getpid():  # isdigit() takes "²", int() does not
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError, OSError):
            continue
        try:
            if time.time() - entry.stat(follow_symlinks=False).st_mtime > _LEFT_FOR:
                os.unlink(entry.path)
        except OSError:
            pass


def replace_whole(path: pathlib.Path, write: Callable[[str], None], prefix: str) -> None:
    """`write(a temporary path)` in `path`'s folder, then the file renamed onto `path`; the temporary file gone
    whatever happens. `prefix` names the writer's temporary files (a dot first: hidden), whose left-behind ones
    (their process gone, unchanged for an hour) are removed first. The writer's error as it was raised."""
    _remove_left_behind(path.parent, prefix)
    temporary = None
    try:
        temporary = _new_temporary(path.parent, prefix)
        write(str(temporary))
        os.replace(temporary, path)
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
