"""Cloud Storage as TensorFlow's GCS file system uses it, at contract.storage's boundary, for tests (TensorFlow's
gs:// cannot be pointed at an emulator here).

What it models (tensorflow/tsl/platform/cloud/gcs_file_system.cc, and the
generic FileSystem::RecursivelyCreateDir in file_system.cc, of TensorFlow 2.x):
- a flat namespace of objects, listed in name order; each object is written
  whole;
- a folder exists when any object's name starts with "<folder>/": its files,
  or a directory marker, an empty object named "<folder>/";
- makedirs walks up to the first folder that exists and writes a marker for
  each missing one below it, top down (CreateDir);
- listing a folder (GetChildren) gives its files and subfolders, never its own
  marker; a walk gives files only, markers are folders; listing a missing folder
  raises NotFoundError (tf.io.gfile.listdir checks the folder first);
- renaming a folder (RenameFile) lists every object under it, its own marker
  first (it sorts first), and moves them one by one in name order, each a copy
  and then a delete of the source (RenameObject); AlreadyExistsError first if
  the destination exists (tf.io.gfile.rename without overwrite);
- deleting a folder (DeleteRecursively) deletes every object under it, markers
  included, in name order.
The process can be killed after any number of object changes (a write, a copy,
a delete, a marker): the change that would exceed the budget, and every one
after it (cleanup in `finally` blocks included), raises Killed and changes
nothing.
"""

from __future__ import annotations

import io
import posixpath

import tensorflow as tf

BUCKET_PREFIX = "gs://"


class Killed(BaseException):
    """The process died here (preempted, OOM-killed): no Python cleanup gets to change storage any more."""


class FakeObjectStore:
    def __init__(self, objects: dict[str, bytes] | None = None, budget: int | None = None):
        self.objects = dict(objects or {})
        self.budget = budget  # object changes left before the kill; None: never killed
        self.changes = 0  # object changes made
        self.log: list[tuple[str, str]] = []  # (what, object name) for every change made, in order
        self.dead = False

    def _change(self, what: str, name: str) -> None:
        if self.dead or (self.budget is not None and self.changes >= self.budget):
            self.dead = True
            raise Killed()
        self.changes += 1
        self.log.append((what, name))

    @staticmethod
    def _prefix(folder: str) -> str:
        return folder.rstrip("/") + "/"

    @staticmethod
    def _is_bucket(path: str) -> bool:
        return "/" not in path[len(BUCKET_PREFIX):].strip("/")

    def _under(self, folder: str) -> list[str]:
        """Every object under `folder`, its marker included, in name order (a recursive listing)."""
        prefix = self._prefix(folder)
        return sorted(name for name in self.objects if name.startswith(prefix))

    def exists(self, path: str) -> bool:
        return path in self.objects or self.isdir(path)

    def isdir(self, path: str) -> bool:
        return self._is_bucket(path) or bool(self._under(path))

    def listdir(self, path: str) -> list[str]:
        if not self.isdir(path):
            raise tf.errors.NotFoundError(None, None, f"Could not find directory {path}")
        prefix = self._prefix(path)
        return sorted({name[len(prefix):].split("/")[0] for name in self._under(path)} - {""})

    def files(self, folder: str) -> list[str]:
        prefix = self._prefix(folder)
        return [name[len(prefix):] for name in self._under(folder) if not name.endswith("/")]

    def markers(self, folder: str) -> list[str]:
        """The directory markers under `folder` (its own included, as ""), relative to it."""
        prefix = self._prefix(folder)
        return [name[len(prefix):] for name in self._under(folder) if name.endswith("/")]

    def makedirs(self, path: str) -> None:
        missing = []
        path = path.rstrip("/")
        while not self.isdir(path):
            if path in self.objects:
                raise tf.errors.FailedPreconditionError(None, None, f"{path} is not a directory")
            missing.append(path)
            path = posixpath.dirname(path)
        for folder in reversed(missing):
            self._change("marker", self._prefix(folder))
            self.objects[self._prefix(folder)] = b""

    def read(self, path: str) -> bytes:
        if path not in self.objects:
            raise tf.errors.NotFoundError(None, None, f"{path} not found")
        return self.objects[path]

    def open(self, path: str, mode: str = "rb"):
        assert mode == "rb", mode
        return io.BytesIO(self.read(path))

    def write(self, path: str, data: bytes) -> None:
        self._change("write", path)
        self.objects[path] = bytes(data)

    def copy(self, source: str, destination: str) -> None:
        data = self.read(source)
        self._change("copy", destination)
        self.objects[destination] = data

    def rename_folder(self, source: str, destination: str) -> None:
        if self.exists(destination):
            raise tf.errors.AlreadyExistsError(None, None, destination)
        if not self.isdir(source):
            self._rename_object(source, destination)
            return
        prefix = self._prefix(source)
        for name in self._under(source):
            self._rename_object(name, self._prefix(destination) + name[len(prefix):])

    def _rename_object(self, source: str, destination: str) -> None:
        self.copy(source, destination)
        self.remove(source)

    def remove(self, path: str) -> None:
        if path not in self.objects:
            raise tf.errors.NotFoundError(None, None, f"{path} not found")
        self._change("delete", path)
        del self.objects[path]

    def rmtree(self, path: str) -> None:
        for name in self._under(path):
            self.remove(name)
