"""A folder source's listing: every file below a folder, what could not be listed and why, and what an operating
system keeps there (ingest.system_files), set apart.

A local folder is walked from a queue, shallowest folders first, each folder's entries in name order: a tree of
any depth is listed, and a folder two paths lead to (two links, a link and its target) is listed once, under the
first path reached (the shortest, then the first by name); the other paths are reported as such, not walked again
(links between sibling folders would otherwise list one image 2^N times). Links to folders are followed (class
folders are often links to where the images live), but never back to a folder the data folder is in (`/`, a home
folder): that would list the data again and whatever else that folder holds.
"""

from __future__ import annotations

import collections
import os
import pathlib
import stat
from typing import Iterable, NamedTuple

from ingest.system_files import is_system_folder, system_part


class Listing(NamedTuple):
    """A folder's files as a source reads them."""
    files: list[tuple[str, str]]  # (relative path, path or URI), sorted as sorted(rglob()) sorts
    problems: list[tuple[str, str]]  # (relative path, what is wrong): what could not be listed
    passed_over: list[str]  # an operating system's own files and folders (a folder's ends in "/"), relative


def is_uri(path: str | os.PathLike) -> bool:
    """gs:// and other remote locations go through tf.io.gfile; plain paths keep the local file system."""
    return "://" in str(path)


def list_folder(root: str) -> Listing:
    return remote_files(root) if is_uri(root) else local_files(root)


def kind_of(mode: int) -> str:
    """What a file that is neither a regular file nor a folder is, in a reason's words."""
    for test, kind in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return kind
    return "not a file"


def _passing_over(files: list[tuple[str, str]], problems: list[tuple[str, str]],
                  folders: Iterable[str] = ()) -> Listing:
    """The listing with an operating system's own files and folders set apart; `folders`: ones not entered."""
    by_parts = lambda entry: pathlib.PurePosixPath(entry[0]).parts  # noqa: E731 - the order of sorted(rglob())
    kept, unlisted, passed = [], [], dict.fromkeys(folders)
    for entries, still in ((files, kept), (problems, unlisted)):  # a broken link named Thumbs.db is one of them too
        for entry in entries:
            part = None if entry[0].endswith("/") else system_part(entry[0])  # a folder there could not be read
            if part is None:
                still.append(entry)
            else:
                passed[part] = None
    return Listing(sorted(kept, key=by_parts), sorted(unlisted, key=by_parts),
                   sorted(passed, key=lambda relative: pathlib.PurePosixPath(relative).parts))


def remote_files(root: str) -> Listing:
    """Every file below a URI folder through tf.io.gfile, as local_files lists a local one."""
    import tensorflow as tf

    root = root.rstrip("/")
    files = []
    for folder, _, names in tf.io.gfile.walk(root):
        folder = folder.rstrip("/")
        for name in names:
            uri = f"{folder}/{name}"
            files.append((uri[len(root) + 1:], uri))
    return _passing_over(files, [])


def _holds_anything(folder: str) -> bool:
    """Whether a folder not entered holds an entry; one that cannot be read is taken to."""
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is not None
    except OSError:
        return True


def _folders_holding(root: str | os.PathLike) -> frozenset[tuple[int, int]]:
    """The identities of the folders `root` is in (not `root` itself)."""
    real = pathlib.Path(os.path.realpath(root))
    identities = set()
    for folder in real.parents:
        try:
            found = os.stat(folder)
        except OSError:  # a folder above that this user may not look at: nothing a link could be seen to reach
            continue
        identities.add((found.st_dev, found.st_ino))
    return frozenset(identities)


def _link_text(entry: os.DirEntry) -> str:
    """ (its link's target as written), for a reason: relative, as most links are, it moves with the folder, so a
    folder moved elsewhere keeps its fingerprint."""
    return f" ({os.readlink(entry.path)})" if entry.is_symlink() else ""


def local_files(root: str | os.PathLike) -> Listing:
    """Every file below a local folder, what could not be listed, and an operating system's own files (the
    module's docstring says how the folder is walked). Returned as (relative path, problem) rather than skipped:
    folders that cannot be read, broken links, links back to a folder above, a folder reached by a second path,
    and entries that are not regular files."""
    files: list[tuple[str, str]] = []
    problems: list[tuple[str, str]] = []
    skipped: list[str] = []  # an operating system's folders, not entered
    above = _folders_holding(root)
    top = os.stat(root)
    first_path = {(top.st_dev, top.st_ino): ""}  # each folder's identity -> the path it is listed under
    queue = collections.deque([(os.fspath(root), pathlib.PurePosixPath(), frozenset(first_path))])
    while queue:
        folder, relative, ancestors = queue.popleft()
        try:
            with os.scandir(folder) as listed:
                entries = sorted(listed, key=lambda e: e.name)
        except OSError as error:
            problems.append((f"{relative.as_posix()}/", f"folder cannot be read ({error.strerror or error}): "
                                                         "its files were not ingested"))
            continue
        for entry in entries:
            name = relative / entry.name
            try:
                if is_system_folder(entry.name) and entry.is_dir():
                    if _holds_anything(entry.path):  # as an object store lists it: an empty folder is nothing
                        skipped.append(f"{name.as_posix()}/")
                elif entry.is_dir():  # follows links
                    found = os.stat(entry.path)
                    identity = (found.st_dev, found.st_ino)
                    if identity in ancestors or identity in above:
                        problems.append((f"{name.as_posix()}/", "symbolic link loop: leads back to a folder above "
                                                                f"it{_link_text(entry)}: not followed"))
                    elif identity in first_path:
                        problems.append((f"{name.as_posix()}/", f"the same folder as {first_path[identity]}/"
                                                                f"{_link_text(entry)}: its files are listed there, "
                                                                "once"))
                    else:
                        first_path[identity] = name.as_posix()
                        queue.append((entry.path, name, ancestors | {identity}))
                elif entry.is_file():
                    files.append((name.as_posix(), entry.path))
                elif entry.is_symlink():
                    try:
                        target = kind_of(os.stat(entry.path).st_mode)
                    except OSError:
                        problems.append((name.as_posix(), f"broken symbolic link to {os.readlink(entry.path)}"))
                    else:  # a pipe or a device: never opened
                        problems.append((name.as_posix(), f"not a regular file: a link to {target}{_link_text(entry)}"))
                else:
                    problems.append((name.as_posix(), f"not a regular file: {kind_of(entry.stat().st_mode)}"))
            except OSError as error:
                problems.append((name.as_posix(), f"cannot be read ({error.strerror or error})"))
    return _passing_over(files, problems, skipped)
