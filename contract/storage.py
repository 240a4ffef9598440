"""The storage boundary, and the one way a folder is published on it: files first, commit record last.

Every pushed model version and every span is a folder that readers (TF
Serving, ImportExampleGen, `models`, `rollback`, the baseline) must see either
whole or not at all. A local disk or a PVC renames a folder atomically; Cloud
Storage cannot: a folder "rename" copies and deletes object by object, in name
order, and a pod killed in between leaves half a folder under the final name.
What Cloud Storage does guarantee is that one object is written whole. So a
folder is published the same way on every storage:

1. its files are written under a hidden staging name beside the final place;
2. the staging folder is renamed to the final name (atomic on a file system,
   object by object on an object store), still without its commit record;
3. the commit record, one small file, is written last, in one piece.

A folder whose commit record is missing or does not list files that are all
present is incomplete: readers never count it, and the next writer moves it
aside (commit record last to go, so a move killed midway still reads as
incomplete) and never reuses its number, which a server may have seen.

All file access of publishing and reading published folders goes through the
functions of this module, so tests can put an object store's semantics (a
folder rename as object copies in name order, a process killed between any
two objects) in place of TensorFlow's file systems, which cannot be pointed at
a Cloud Storage emulator.

A symbolic link on a local disk or a PVC is never followed by these functions:
whatever it points at is the user's, outside the root, and a walk, copy or
delete through it would reach those files. A folder that is a link, or holds
one, is incomplete to readers and moved aside by writers with its links as
links (Cloud Storage has no links).
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import time
import uuid
from typing import Callable, Iterable

import tensorflow as tf

from contract.errors import CommandError, first_line
from contract.json_files import UnreadableFileError, parse_json  # noqa: F401 (UnreadableFileError: storage's own)

ASIDE_SUFFIX = ".incomplete"  # serving_model/ -> serving_model.incomplete/ holds versions moved aside
# What the backend raises when storage fails: the operating system's errors, and TensorFlow's file systems' (an
# OpError is no OSError), so that callers catch them without importing TensorFlow themselves.
FAULTS = (OSError, tf.errors.OpError)


class GFileBackend:
    """tf.io.gfile: local paths, PVC paths and gs:// alike."""

    def exists(self, path: str) -> bool:
        return tf.io.gfile.exists(path)

    def isdir(self, path: str) -> bool:
        return tf.io.gfile.isdir(path)

    def listdir(self, path: str) -> list[str]:
        return [name.rstrip("/") for name in tf.io.gfile.listdir(path)]

    def files(self, folder: str) -> list[str]:
        """Every file under `folder`, as sorted posix paths relative to it. Locally, symbolic links are not
        listed and never followed (links_within names them)."""
        if is_local(folder):
            return _local_files(folder)
        found = []
        for directory, _, names in tf.io.gfile.walk(folder):
            relative = posixpath.relpath(directory, folder)
            found += [name if relative == "." else f"{relative}/{name}" for name in names]
        return sorted(found)

    def makedirs(self, path: str) -> None:
        tf.io.gfile.makedirs(path)

    def read(self, path: str) -> bytes:
        _refuse_special(path)
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()

    def open(self, path: str, mode: str = "rb"):
        if "r" in mode:
            _refuse_special(path)
        return tf.io.gfile.GFile(path, mode)

    def write(self, path: str, data: bytes) -> None:
        """Writes `path` whole or not at all (an object store writes one object atomically; a file system is
        given a temporary file renamed into place)."""
        if "://" in path:
            with tf.io.gfile.GFile(path, "wb") as f:
                f.write(data)
            return
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            with open(temporary, "wb") as f:
                f.write(data)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)

    def copy(self, source: str, destination: str) -> None:
        tf.io.gfile.copy(source, destination, overwrite=True)

    def rename_folder(self, source: str, destination: str) -> None:
        """Atomic on a file system; object by object on an object store. Raises AlreadyExistsError if
        `destination` exists."""
        tf.io.gfile.rename(source, destination, overwrite=False)

    def remove(self, path: str) -> None:
        tf.io.gfile.remove(path)

    def rmtree(self, path: str) -> None:
        """Removes `path` and what is under it; locally, a symbolic link is removed as a link, never what it
        points at (tf.io.gfile's rmtree descends into linked folders)."""
        if not is_local(path):
            if tf.io.gfile.exists(path):
                tf.io.gfile.rmtree(path)
        elif os.path.islink(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder"}


class NotAFileError(OSError):
    """A local path to read is not a regular file (a FIFO would block a reader forever); names the path. An
    OSError, not a CommandError: every reader handles OSError already, and contract.errors.storage_fault words
    it in one line where it reaches a command's end."""

    def __init__(self, path: str, kind: str):
        super().__init__(f"{path}: {kind}, not a file: never read")
        self.path, self.kind = path, kind


def special_kind(path: str) -> str | None:
    """Locally, what `path` (followed through links) is when it is there and is no regular file ("a FIFO", ...): a
    reader of a FIFO waits for a writer forever. None for a regular file, an absent one (the reader names that)
    and a URI."""
    if not is_local(path):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _refuse_special(path: str) -> None:
    """Locally, only a regular file (or a link to one) is read; what is absent is left to the reader's error."""
    kind = special_kind(path)
    if kind is not None:
        raise NotAFileError(path, kind)


def is_local(path: str | os.PathLike) -> bool:
    """A path on this machine's file systems (a disk, a PVC), where symbolic links exist; not a URI."""
    return "://" not in os.fspath(path)


def _local_files(folder: str) -> list[str]:
    if os.path.islink(folder):
        return []
    found = []
    for directory, _, names in os.walk(folder, followlinks=False):
        relative = posixpath.relpath(directory, folder)
        found += [name if relative == "." else f"{relative}/{name}" for name in names
                  if not os.path.islink(os.path.join(directory, name))]
    return sorted(found)


def links_within(folder: str | os.PathLike) -> dict[str, str]:
    """{relative path: where it points} of every symbolic link at or under a local `folder` ("." for the folder
    itself), found without following any; {} on an object store, which has no links."""
    folder = os.fspath(folder)
    if not is_local(folder):
        return {}
    if os.path.islink(folder):
        return {".": os.readlink(folder)}
    found = {}
    for directory, folders, names in os.walk(folder, followlinks=False):
        for name in folders + names:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                found[posixpath.relpath(path, folder)] = os.readlink(path)
    return dict(sorted(found.items()))


def link_problem(folder: str | os.PathLike) -> str | None:
    """Why `folder` cannot be used without following a symbolic link out of it (None: it holds no link)."""
    links = links_within(folder)
    if not links:
        return None
    if "." in links:
        return f"it is a symbolic link (to {links['.']}), and links are never followed"
    shown = ", ".join(f"{name} -> {target}" for name, target in list(links.items())[:3])
    more = f" and {len(links) - 3} more" if len(links) > 3 else ""
    return f"it holds a symbolic link ({shown}{more}), and links are never followed"


backend = GFileBackend()  # replaced in tests by an object store's semantics


class AlreadyExistsError(Exception):
    """The folder to publish to exists already (another writer took that name). Internal: the writer that
    gets it takes the next name; it never ends a command."""


class LinkRefusedError(CommandError):
    """A folder to copy is or holds a symbolic link: its target is not the pipeline's to copy."""


def read_json(path: str, expected: type = dict):
    """The JSON value in `path`, of type `expected`; UnreadableFileError names the file and what is wrong (not
    there, not UTF-8, not JSON, JSON of another type)."""
    try:
        data = backend.read(path)
    except (OSError, tf.errors.OpError) as error:
        raise UnreadableFileError(path, f"cannot be read ({first_line(error)})") from None
    return parse_json(path, data, expected)


def copy_tree(source: str, destination: str, leave_out: Iterable[str] = ()) -> None:
    """Copies every file under `source` to `destination` but those named (relative paths) in `leave_out`.
    LinkRefusedError, before anything is copied, if `source` is or holds a symbolic link."""
    problem = link_problem(source)
    if problem:
        raise LinkRefusedError(f"{source} cannot be copied: {problem}")
    backend.makedirs(destination)
    for name in backend.files(source):
        if name in leave_out:
            continue
        target = posixpath.join(destination, name)
        backend.makedirs(posixpath.dirname(target))
        backend.copy(posixpath.join(source, name), target)


def staging_name(kind: str) -> str:
    """A hidden folder name no reader lists: TF Serving loads only numbered folders, ImportExampleGen only
    span-N/."""
    return f".{kind}-{uuid.uuid4().hex}"


def publish(staging: str, final: str, commit_file: str, commit: bytes) -> None:
    """Steps 2 and 3: `staging` (every file but the commit record) becomes `final`, then the commit record
    (`commit_file`, relative to the folder) is written in one piece. AlreadyExistsError if `final` exists."""
    if backend.exists(final):
        raise AlreadyExistsError(final)
    try:
        backend.rename_folder(staging, final)
    except tf.errors.AlreadyExistsError:
        raise AlreadyExistsError(final) from None
    target = posixpath.join(final, commit_file)
    backend.makedirs(posixpath.dirname(target))
    backend.write(target, commit)


def move_aside(folder: str, aside_dir: str, name: str, last_file: str) -> str:
    """Moves an incomplete `folder` to `aside_dir`/`name`-<UTC time>: on a file system in one rename; on an
    object store it copies every file, then deletes them, `last_file` last (a damaged commit record, or the
    marker that says the folder is incomplete), so that a move killed midway leaves `folder` incomplete still,
    and moved again next time. Returns the new place."""
    destination = posixpath.join(aside_dir, f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    while backend.exists(destination):
        destination += "-" + uuid.uuid4().hex[:6]
    if is_local(folder):
        # One rename, atomic beside the folder: its links move as links (their targets untouched), and a FIFO or
        # a device among its files is never opened (a copy would wait on a FIFO for ever).
        backend.makedirs(aside_dir)
        os.rename(folder, destination)
        return destination
    names = backend.files(folder)
    copy_tree(folder, destination)
    for relative in sorted(names, key=lambda n: n == last_file):
        backend.remove(posixpath.join(folder, relative))
    backend.rmtree(folder)
    return destination


# What follows a staging folder's prefix in the names staging_name gives: a folder of a user's that shares the
# prefix (".queue-notes") is not the writer's, and is never removed.
_STAGING_SUFFIX = re.compile(r"[0-9a-f]{32}")


def remove_staging(parent: str, prefixes: Iterable[str], suffix: re.Pattern = _STAGING_SUFFIX) -> list[str]:
    """Removes hidden staging folders a killed writer left in `parent` (a prefix, then what `suffix` matches
    whole: a staging_name by default); returns their names. Called only by the holder of the root's lease, so no
    other writer is using them."""
    if not backend.isdir(parent):
        return []
    stale = [name for name in backend.listdir(parent) for prefix in prefixes
             if name.startswith(prefix) and suffix.fullmatch(name[len(prefix):])]
    for name in stale:
        backend.rmtree(posixpath.join(parent, name))
    return stale


def refused_entries(parent: str, watched: Callable[[str], bool]) -> dict[str, str]:
    """{path: why} of the entries of `parent` whose names `watched` accepts and that are, or hold, a symbolic
    link (contract.storage never follows one); {} on an object store."""
    if not is_local(parent) or not os.path.isdir(parent):
        return {}
    found = {posixpath.join(parent, name): link_problem(posixpath.join(parent, name))
             for name in sorted(os.listdir(parent)) if watched(name)}
    return {path: problem for path, problem in found.items() if problem}


def move_links_aside(parent: str, aside_dir: str, watched: Callable[[str], bool]) -> list[str]:
    """Moves each of refused_entries(parent, watched) to `aside_dir`, with its links as links; returns one line
    each. Called only under the root's lease."""
    done = []
    for folder, problem in refused_entries(parent, watched).items():
        moved = move_aside(folder, aside_dir, posixpath.basename(folder), "")
        done.append(f"{folder} was refused: {problem}; moved to {moved} as it was (what a link points at is "
                    "untouched); its name is not used again")
    return done


def aside_numbers(aside_dir: str, number_of: Callable[[str], int | None]) -> list[int]:
    """The numbers of the folders moved aside to `aside_dir` (`number_of` reads one from a folder's name)."""
    if not backend.isdir(aside_dir):
        return []
    return sorted(n for name in backend.listdir(aside_dir) if (n := number_of(name)) is not None)
