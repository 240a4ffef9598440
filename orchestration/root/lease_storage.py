"""Where a root's lease is kept, and the only writes it allows: each change to an existing lease is conditional on
the lease read before it, so two runs never both take over one stale lease.

- LocalFile, on a local path or a Kubeflow deployment's volume: created whole under
  another name and linked into place (a reader never sees an empty lease); replaced
  or deleted under a short file lock on a guard file beside it. The temporary files
  are named by host, pid and a random part, since pods in pid namespaces of their
  own share pid numbers.
- GcsObject, on gs://: created if absent (ifGenerationMatch=0), replaced or deleted
  on the generation read.

A read returns (text, token); `replace` and `delete` take that token and return False when the lease changed since.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import uuid


def _unique() -> str:
    """A name no other writer uses at the same time: pods have pid namespaces of their own (the same task has
    the same pid in every pod) and may share a host name pattern, so the pid alone collides."""
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex}"


class LocalFile:
    """A lease file on a local or mounted file system. Changes to an existing lease happen under a short
    file lock on a guard file beside it; the token of a read is the text read."""

    def __init__(self, path: str):
        self.path = path

    def create(self, text: str) -> bool:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        # Written whole under another name, then linked into place (fails if the lease exists): a reader never
        # sees an empty lease file, which it would take for an unreadable, stale one and take over.
        temporary = f"{self.path}.{_unique()}.creating"
        try:
            with open(temporary, "w") as f:
                f.write(text)
            os.link(temporary, self.path)
        except FileExistsError:
            return False
        finally:  # a full disk included: no stray temporary file is left beside the lease
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        return True

    def read(self):
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        return text, text

    @contextlib.contextmanager
    def _guard(self):
        with open(self.path + ".guard", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            yield

    def replace(self, text: str, token: str) -> bool:
        with self._guard():
            current = self.read()
            if current is None or current[1] != token:
                return False
            temporary = f"{self.path}.{_unique()}.incoming"
            with open(temporary, "w") as f:
                f.write(text)
            os.replace(temporary, self.path)
            return True

    def delete(self, token: str) -> bool:
        with self._guard():
            current = self.read()
            if current is None or current[1] != token:
                return False
            os.remove(self.path)
            return True


class GcsObject:
    """A lease object on Cloud Storage; the token of a read is the object's generation, and every write is
    conditional on it (or on its absence: ifGenerationMatch=0)."""

    def __init__(self, uri: str):
        from google.cloud import storage

        bucket, _, name = uri[len("gs://"):].partition("/")
        self._blob_of = lambda: storage.Client().bucket(bucket).blob(name)

    def create(self, text: str) -> bool:
        from google.api_core import exceptions

        try:
            self._blob_of().upload_from_string(text, if_generation_match=0)
        except exceptions.PreconditionFailed:
            return False
        return True

    def read(self):
        from google.api_core import exceptions

        blob = self._blob_of()
        try:
            text = blob.download_as_text()
        except exceptions.NotFound:
            return None
        return text, blob.generation

    def replace(self, text: str, token: int) -> bool:
        from google.api_core import exceptions

        try:
            self._blob_of().upload_from_string(text, if_generation_match=token)
        except exceptions.PreconditionFailed:
            return False
        return True

    def delete(self, token: int) -> bool:
        from google.api_core import exceptions

        try:
            self._blob_of().delete(if_generation_match=token)
        except (exceptions.PreconditionFailed, exceptions.NotFound):
            return False
        return True
