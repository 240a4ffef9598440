"""The files `predict` classifies: the paths given, folders walked, each file once, an operating system's own files
and a pipeline's root passed over, links followed with care."""

from __future__ import annotations

import os
import pathlib

from contract import layout
from contract.errors import shown_name
from ingest import listing, system_files


def find_files(paths: list[str | os.PathLike], passed_over: list | None = None, roots: list | None = None,
               same: list | None = None) -> list[pathlib.Path]:
    """Files as given, and every entry inside folders that is not a folder, sorted, each file once (by what it is,
    not by how its path reads: a file named twice, or through a link, is classified once): links to folders
    followed, each folder walked once (a link loop, or a link to a folder walked already, adds nothing); a broken
    link, a pipe, a device, an entry that cannot be looked at and a folder that cannot be listed kept, to be
    reported as what they are (predict_files opens none but regular files); an operating system's own files and
    folders passed over (ingest.system_files: appended to `passed_over` as paths, a folder's ending in "/"; a file
    named on the command line is always classified); a pipeline's root passed over whole (appended to `roots`): its
    plots and queues are no one's photos, nor traffic to label. Missing paths are kept to be reported. `same`: (path,
    path kept) of each other path that names a file found already (a link, another spelling), to be said."""
    found: dict[object, pathlib.Path] = {}
    seen: set[tuple[int, int]] = set()
    passed: dict[str, None] = {}
    given = {_identity(path) for path in map(pathlib.Path, paths) if path.is_dir()}
    for path in map(pathlib.Path, paths):
        for file in _walk(path, seen, passed, given, roots if roots is not None else []) if path.is_dir() else [path]:
            if (kept := found.setdefault(_identity(file), file)) != file and same is not None:
                same.append((file, kept))
    if passed_over is not None:
        passed_over += list(passed)
    return list(found.values())


def _identity(path: pathlib.Path) -> object:
    """What a path names: the file it leads to, else (missing, a broken link) its absolute path."""
    try:
        found = os.stat(path)
        return found.st_dev, found.st_ino
    except (OSError, ValueError):
        return os.path.abspath(path)


def _walk(top: pathlib.Path, seen: set, passed: dict, given: set, roots: list) -> list[pathlib.Path]:
    """The entries below `top` as find_files takes them, walked without recursion (a deep tree is no fault); a
    link back to a folder `top` is in (`/`, a home folder) is not followed (that would walk the machine) but kept,
    to be reported, unless that folder is given too (`given`: the identities of the folders given)."""
    files, stack = [], [top]
    above, top_real = listing.folders_holding(top), os.path.realpath(top)
    while stack:
        folder = stack.pop()
        try:
            found = folder.stat()
            identity = (found.st_dev, found.st_ino)
            # a folder on `top`'s path as given but inside it for real (a/b for a/b/c/up -> a) is walked; its real
            # path only for such a folder (resolving every folder's would take a deep tree's depth squared lookups)
            if identity in above and not listing.below(os.path.realpath(folder), top_real):
                if identity not in given:
                    files.append(folder)  # reported: a link back to a folder above, not followed
                continue
            if identity in seen:
                continue
            seen.add(identity)
            if os.path.isfile(folder / layout.ROOT_MARKER) and not os.path.islink(folder / layout.ROOT_MARKER):
                roots.append(folder)
                continue
            with os.scandir(folder) as listed:
                entries = sorted(listed, key=lambda entry: entry.name)
        except OSError:
            files.append(folder)  # reported: a folder that cannot be listed
            continue
        folders = []
        for entry in entries:
            entry_path = folder / entry.name
            try:
                is_dir = entry.is_dir()
            except OSError:  # a link that cannot be looked up (a loop of links, no search permission): reported
                is_dir = False
            if system_files.system_part(entry.name) is not None:
                passed[f"{entry_path}/" if is_dir else str(entry_path)] = None
            elif is_dir:
                folders.append(entry_path)
            else:
                files.append(entry_path)
        stack += reversed(folders)
    return sorted(files)


SAME_FILES_SHOWN = 3


def same_files_phrase(same: list) -> str:
    """`predict`'s note on the paths find_files took once: what it names and what it classified them as."""
    pairs = [f"{shown_name(str(path))} as {shown_name(str(kept))}" for path, kept in same[:SAME_FILES_SHOWN]]
    more = f", and {len(same) - SAME_FILES_SHOWN} more" if len(same) > SAME_FILES_SHOWN else ""
    return (f"{len(same)} path{'s' if len(same) > 1 else ''} named a file found already (a link, or another "
            f"spelling of its path), classified once: {', '.join(pairs)}{more}")
