"""Reading back a JSON file the project wrote: one error that names the file and what is wrong with it.

Without TensorFlow: a process that only reads a local file of its own (`submit --local` reading its run's summary)
need not import TensorFlow's file layer for it, about 5 s of CPU (contract.storage reads any place, gs:// too).
"""

from __future__ import annotations

import json
import os
import stat

from contract.errors import CommandError, first_line


class UnreadableFileError(CommandError):
    """A file the project wrote and reads back is damaged or of another shape; the message names the file and
    what is wrong."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
               bool: "true or false", type(None): "null"}


def parse_json(path: str, data: bytes, expected: type = dict):
    """The JSON value of `data`, read from `path`, of type `expected`; UnreadableFileError names the file and what
    is wrong (not UTF-8, not JSON, JSON of another type)."""
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise UnreadableFileError(path, "not UTF-8 text, so not JSON") from None
    except json.JSONDecodeError as error:
        raise UnreadableFileError(path, f"not valid JSON ({error})") from None
    except RecursionError:
        raise UnreadableFileError(path, "JSON nested too deeply to read") from None
    if not isinstance(value, expected):
        raise UnreadableFileError(path, f"holds {_JSON_TYPES.get(type(value), type(value).__name__)} where "
                                        f"{_JSON_TYPES.get(expected, expected.__name__)} belongs")
    return value


def read_local_json(path: str, expected: type = dict):
    """storage.read_json for a file on this machine's file system, without TensorFlow. Only a regular file (or a
    link to one) is read: a FIFO's reader would wait for a writer forever."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO waits for a writer, too
    except OSError as error:
        raise UnreadableFileError(path, f"cannot be read ({first_line(error)})") from None
    with os.fdopen(descriptor, "rb") as f:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise UnreadableFileError(path, "cannot be read (not a regular file)")
        try:
            data = f.read()
        except OSError as error:
            raise UnreadableFileError(path, f"cannot be read ({first_line(error)})") from None
    return parse_json(path, data, expected)
