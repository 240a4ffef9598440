"""What an operating system or a file server keeps in a folder of photos, and never a photo.

Files: Finder's .DS_Store, Explorer's Thumbs.db and desktop.ini, a Mac's ._* beside each file on a shared disk or
in a zip, other file browsers' notes. Folders: a Mac zip's __MACOSX/, NAS thumbnails (@eaDir/, .@__thumb/) and
recycle bins (#recycle/, @Recycle/), netatalk's .AppleDouble/, a drive's trash and index folders. A folder source
(ingest.sources) passes over them by name, lists them in its report, and leaves them out of its fingerprint, so that
a file browser opening the folder makes no new span; a folder of them is not entered (its thumbnails would be the
same photos again, in another split; a trash's, the ones a person deleted). `predict` passes over the same.
"""

from __future__ import annotations

import functools
import posixpath

from contract.errors import shown_name

# Matched in any case: Windows' and macOS's file systems ignore it, so a copy may carry any.
SYSTEM_FILES = frozenset(name.lower() for name in (
    ".DS_Store", "Thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "Icon\r", ".localized",
    ".apdisk", ".VolumeIcon.icns", ".directory", ".picasa.ini", "Picasa.ini", ".nomedia"))
SYSTEM_FOLDERS = frozenset(name.lower() for name in (
    "__MACOSX", ".AppleDouble", ".Trashes", ".Trash", ".Spotlight-V100", ".fseventsd", ".TemporaryItems",
    "$RECYCLE.BIN", "RECYCLER", "System Volume Information", ".picasaoriginals", ".thumbnails",
    "@eaDir", "#recycle", "#snapshot",  # Synology
    "@Recycle", "@Recently-Snapshot", ".@__thumb"))  # QNAP
_TRASH_PREFIX = ".trash-"  # a removable drive's trash on Linux: .Trash-<uid>


def is_system_file(name: str) -> bool:
    return name.lower() in SYSTEM_FILES or name.startswith("._")


def is_system_folder(name: str) -> bool:
    return name.lower() in SYSTEM_FOLDERS or name.lower().startswith(_TRASH_PREFIX)


def system_part(relative: str) -> str | None:
    """The passed-over part of an entry's relative POSIX path: the first folder of it that is an operating system's
    (with its "/"), or the path itself when the entry is one (a file, or a link of such a name that leads nowhere);
    None for any other."""
    folder, _, name = relative.rstrip("/").rpartition("/")
    inside = _system_folder_of(folder) if folder else None
    if inside is not None:
        return inside
    return relative if name and (is_system_file(name) or is_system_folder(name)) else None


@functools.lru_cache(maxsize=4096)
def _system_folder_of(folder: str) -> str | None:
    """The first of a folder's path's parts that is an operating system's folder, as "a/b/" (its files share it:
    a listing of 25,000 files looks at each folder once)."""
    parts = [part for part in folder.split("/") if part]
    for depth, part in enumerate(parts):
        if is_system_folder(part):
            return "/".join(parts[:depth + 1]) + "/"
    return None


def passed_over_phrase(passed_over: list[str]) -> str:
    """How many files and folders were passed over, and their names: `3 file(s) the operating system keeps
    (.DS_Store, ._*, __MACOSX/)`; `passed_over`: paths as ingest.listing.Listing has them (a folder's ends in /)."""
    folders = sum(str(path).endswith("/") for path in passed_over)
    counts = " and ".join(f"{count} {kind}(s)" for count, kind in ((len(passed_over) - folders, "file"),
                                                                   (folders, "folder")) if count)
    names = {posixpath.basename(str(path).rstrip("/")) + "/" * str(path).endswith("/") for path in passed_over}
    names = sorted({"._*" if name.startswith("._") else name for name in names})
    return f"{counts} the operating system keeps ({', '.join(map(shown_name, names))})"
