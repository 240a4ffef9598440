"""A folder source's listing: every file below a folder, what could not be listed and why, and what an operating
system keeps there (ingest.system_files), set apart.

A local folder is walked from a queue, shallowest folders first, each folder's entries in name order: a tree of
any depth is listed. Links to folders are followed (class folders are often links to where the images live), but
never back to a folder the data folder is in (`/`, a home folder: that would list the data again and whatever else
that folder holds), nor into the pipeline's own output folder. A folder two paths lead to is listed under each path
that gives its files another label or split (their folder names: `cat/x -> ../shared` and `dog/y -> ../shared`
list the shared photos as cats and as dogs, which the ingest then quarantines as a conflict), and once for paths
that give the same (links between sibling folders would otherwise list one image 2^N times); the other paths are
reported.
"""

from __future__ import annotations

import collections
import errno
import os
import pathlib
import stat
from typing import Iterable, NamedTuple

from contract.errors import printable
from contract.features import LABEL_NAMES
from ingest.system_files import is_system_folder, system_part

FOLDER_LABELS = {name: index for index, label in enumerate(LABEL_NAMES) for name in (label, label + "s")}
SPLIT_FOLDERS = {"train": "train", "training": "train", "validation": "eval", "val": "eval", "valid": "eval",
                 "eval": "eval", "test": "test"}


def label_for_folder(name: str) -> int | None:
    return FOLDER_LABELS.get(name.lower())


def _meaning(relative: pathlib.PurePosixPath) -> tuple:
    """What a folder's path says of the files below it: the label and the split its nearest such folders give."""
    label = next((label_for_folder(part) for part in reversed(relative.parts) if label_for_folder(part) is not None),
                 None)
    split = next((SPLIT_FOLDERS[part.lower()] for part in reversed(relative.parts) if part.lower() in SPLIT_FOLDERS),
                 None)
    return label, split


class Listing(NamedTuple):
    """A folder's files as a source reads them."""
    files: list[tuple[str, str]]  # (relative path, path or URI), sorted as sorted(rglob()) sorts
    problems: list[tuple[str, str]]  # (relative path, what is wrong): what could not be listed
    passed_over: list[str]  # an operating system's own files and folders (a folder's ends in "/"), relative


def is_uri(path: str | os.PathLike) -> bool:
    """gs:// and other remote locations go through tf.io.gfile; plain paths keep the local file system."""
    return "://" in str(path)


def list_folder(root: str, leave_out: str | None = None) -> Listing:
    """`leave_out`: a folder not to enter (the pipeline's output folder), where a local listing reaches it."""
    return remote_files(root) if is_uri(root) else local_files(root, leave_out)


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


def _identities(paths) -> set[tuple[int, int]]:
    found = set()
    for path in paths:
        try:
            status = os.stat(path)
        except OSError:  # a folder this user may not look at, or gone: nothing a link could be seen to reach
            continue
        found.add((status.st_dev, status.st_ino))
    return found


def folders_holding(root: str | os.PathLike) -> frozenset[tuple[int, int]]:
    """The identities of the folders `root` is in (not `root` itself), along its path as given and along its real
    path (a data folder reached through a link is in both)."""
    given, real = pathlib.Path(os.path.abspath(root)), pathlib.Path(os.path.realpath(root))
    # a folder given through a link below itself (data/self -> data) is still walked
    return frozenset(_identities([*given.parents, *real.parents]) - _identities([root]))


def _link_text(entry: os.DirEntry) -> str:
    """ (its link's target as written), for a reason: relative, as most links are, it moves with the folder, so a
    folder moved elsewhere keeps its fingerprint."""
    return f" ({os.readlink(entry.path)})" if entry.is_symlink() else ""


def local_files(root: str | os.PathLike, leave_out: str | os.PathLike | None = None) -> Listing:
    """Every file below a local folder, what could not be listed, and an operating system's own files (the
    module's docstring says how the folder is walked). Returned as (relative path, problem) rather than skipped:
    folders that cannot be read, broken links, links back to a folder above, a folder reached again, the folder
    `leave_out` (the pipeline's output folder: its own files are no data) and entries that are not regular
    files."""
    files: list[tuple[str, str]] = []
    problems: list[tuple[str, str]] = []
    skipped: list[str] = []  # an operating system's folders, not entered
    above = folders_holding(root)
    # The output folder, and what is inside it but not inside the data folder (a labeling queue is data inside it)
    left_out = (_identities([leave_out]), os.path.realpath(leave_out), os.path.realpath(root)) \
        if leave_out is not None else (set(), None, None)
    top = os.stat(root)
    # (a folder's identity, what its path says of its files) -> the path it is listed under
    first_path = {((top.st_dev, top.st_ino), _meaning(pathlib.PurePosixPath())): ""}
    root_real = os.path.realpath(root)
    # each folder's real path from its parent's (a link's resolved whole): resolving every folder's path from the
    # top would take a deep tree's depth squared lookups
    queue = collections.deque([(os.fspath(root), pathlib.PurePosixPath(), frozenset({(top.st_dev, top.st_ino)}),
                                root_real)])
    while queue:
        folder, relative, ancestors, folder_real = queue.popleft()
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
                    real = (os.path.realpath(entry.path) if entry.is_symlink()
                            else os.path.join(folder_real, entry.name))
                    problem = _folder_problem(entry, name, real, (ancestors, above, root_real), left_out,
                                              first_path)
                    if problem:
                        problems.append((f"{name.as_posix()}/", problem))
                    else:
                        found = os.stat(entry.path)
                        queue.append((entry.path, name, ancestors | {(found.st_dev, found.st_ino)}, real))
                elif entry.is_file():
                    files.append((name.as_posix(), entry.path))
                else:
                    problems.append((name.as_posix(), _not_a_file(entry)))
            except OSError as error:
                problems.append((name.as_posix(), f"cannot be read ({error.strerror or error})"))
    return _passing_over(files, problems, skipped)


def _folder_problem(entry: os.DirEntry, name: pathlib.PurePosixPath, real: str, above: tuple, left_out: tuple,
                    first_path: dict) -> str | None:
    """Why the folder `entry` (its real path `real`) is not walked under `name`; None when it is (and `first_path`
    records it).
    `above`: the folders on its path, those the data folder is in (folders_holding) and the data's real path.
    `left_out`: the output folder's identities, its real path and the data folder's (a folder inside the output
    folder is left out too, but not one inside the data folder: a labeling queue in the output folder is data)."""
    found = os.stat(entry.path)
    identity = (found.st_dev, found.st_ino)
    identities, output, data = left_out
    queue = output and below(data, output)  # a labeling queue: data inside the output folder
    if identity in identities or (output and below(real, output) and not (queue and below(real, data))):
        return "the pipeline's output folder (--output-dir): its files are not data, not read"
    ancestors, holding, data_real = above
    # a folder on the data folder's path as given (a/b for a/b/c/up -> a) that is inside the data folder is data
    if identity in ancestors or (identity in holding and not below(real, data_real)):
        loop = "symbolic link loop" if entry.is_symlink() else "a folder mounted inside itself"
        return f"{loop}: leads back to a folder above it{_link_text(entry)}: not followed"
    seen = first_path.setdefault((identity, _meaning(name)), name.as_posix())
    if seen != name.as_posix():
        return f"the same folder as {seen}/{_link_text(entry)}: its files are listed there, once"
    return None


def below(path: str, folder: str) -> bool:
    """Whether `path` is the folder `folder` or inside it, by their text (real paths: os.path.realpath)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _not_a_file(entry: os.DirEntry) -> str:
    if not entry.is_symlink():
        return f"not a regular file: {kind_of(entry.stat().st_mode)}"
    try:
        target = kind_of(os.stat(entry.path).st_mode)
    except OSError:
        return f"broken symbolic link to {os.readlink(entry.path)}"
    return f"not a regular file: a link to {target}{_link_text(entry)}"  # a pipe or a device: never opened


def why_not_read(path: str | os.PathLike, error: OSError) -> str:
    """What stopped a file's read, as ingest words it for a link: where a broken one leads, or that it loops."""
    if error.errno in (errno.ENOENT, errno.ELOOP) and os.path.islink(path):
        try:
            target = os.readlink(path)
        except OSError:
            target = None
        if target is not None:
            return (f"a symbolic link in a loop ({printable(target)})" if error.errno == errno.ELOOP
                    else f"broken symbolic link to {printable(target)}")
    return error.strerror or str(error)
