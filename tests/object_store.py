"""Cloud Storage's semantics at contract.storage's boundary, for tests (TensorFlow's gs:// cannot be pointed at an
emulator here).

A flat namespace of objects; a "folder" is a name prefix, so an empty one does
not exist. Each object is written whole. A folder rename copies, then deletes,
object by object in name order, as TensorFlow's GCS file system does. The
process can be killed after any number of object changes: the change that
would exceed the budget, and every one after it (cleanup in `finally` blocks
included), raises Killed and changes nothing.
"""

from __future__ import annotations

import io
import posixpath

import tensorflow as tf


class Killed(BaseException):
    """The process died here (preempted, OOM-killed): no Python cleanup gets to change storage any more."""


class FakeObjectStore:
    def __init__(self, objects: dict[str, bytes] | None = None, budget: int | None = None):
        self.objects = dict(objects or {})
        self.budget = budget  # object changes left before the kill; None: never killed
        self.changes = 0  # object changes made
        self.dead = False

    def _change(self) -> None:
        if self.dead or (self.budget is not None and self.changes >= self.budget):
            self.dead = True
            raise Killed()
        self.changes += 1

    @staticmethod
    def _prefix(folder: str) -> str:
        return folder.rstrip("/") + "/"

    def exists(self, path: str) -> bool:
        return path in self.objects or self.isdir(path)

    def isdir(self, path: str) -> bool:
        prefix = self._prefix(path)
        return any(name.startswith(prefix) for name in self.objects)

    def listdir(self, path: str) -> list[str]:
        prefix = self._prefix(path)
        return sorted({name[len(prefix):].split("/")[0] for name in self.objects if name.startswith(prefix)})

    def files(self, folder: str) -> list[str]:
        prefix = self._prefix(folder)
        return sorted(name[len(prefix):] for name in self.objects if name.startswith(prefix))

    def makedirs(self, path: str) -> None:
        pass  # an object store has no folders

    def read(self, path: str) -> bytes:
        if path not in self.objects:
            raise tf.errors.NotFoundError(None, None, f"{path} not found")
        return self.objects[path]

    def open(self, path: str, mode: str = "rb"):
        assert mode == "rb", mode
        return io.BytesIO(self.read(path))

    def write(self, path: str, data: bytes) -> None:
        self._change()
        self.objects[path] = bytes(data)

    def copy(self, source: str, destination: str) -> None:
        data = self.read(source)
        self._change()
        self.objects[destination] = data

    def rename_folder(self, source: str, destination: str) -> None:
        if self.exists(destination):
            raise tf.errors.AlreadyExistsError(None, None, destination)
        names = self.files(source)
        for name in names:
            self.copy(posixpath.join(source, name), posixpath.join(destination, name))
        for name in names:
            self.remove(posixpath.join(source, name))

    def remove(self, path: str) -> None:
        if path not in self.objects:
            raise tf.errors.NotFoundError(None, None, f"{path} not found")
        self._change()
        del self.objects[path]

    def rmtree(self, path: str) -> None:
        for name in self.files(path):
            self.remove(posixpath.join(path, name))
