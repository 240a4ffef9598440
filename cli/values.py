"""What a flag's text may be: argparse types that refuse, at parse time and naming the value, a number out of range,
a URI where a path on this machine is meant, and a path or text that is not UTF-8."""

from __future__ import annotations

import argparse
import os
import pathlib
import re

from contract.errors import shown_name


def count(minimum: int):
    """An argparse type: an integer >= minimum, refused at parse time with the value named."""
    def parse(text: str) -> int:
        if not re.fullmatch(r"-?[0-9]+", text):  # ASCII digits: int() also reads '٣', ' 3' and '1_0'
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value
    return parse


_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # a scheme and "//": gs://, file://, s3://


def local_path(text: str) -> str:
    """An argparse type: a path on this machine, for a flag that writes there. A URI is refused at parse time:
    as a path, gs://b/p.yaml would write a local folder named gs:."""
    if _URI.match(text):
        raise argparse.ArgumentTypeError(f"{text} is a URI: this flag writes on this machine; give a local path "
                                         "(and copy the file to Cloud Storage afterwards if it belongs there)")
    return text


def local_source(text: str) -> pathlib.Path:
    """An argparse type: a source a local run reads, on this machine. A URI is refused at parse time: as a path,
    gs://b/images would be looked for as a local folder named gs:/b/images."""
    if not text.strip():  # an unset variable ("$DATA") would otherwise name the working directory
        raise argparse.ArgumentTypeError("an empty path: give the folder or file to read")
    if _URI.match(text):
        import urllib.parse

        uri = urllib.parse.urlparse(text)
        if uri.scheme.lower() == "file" and uri.netloc in ("", "localhost") and uri.path:
            raise argparse.ArgumentTypeError(f"{text} is a URI: give it as a path ({urllib.parse.unquote(uri.path)})")
        raise argparse.ArgumentTypeError(f"{text} is a URI: a local run reads its source on this machine; copy it "
                                         "here (gsutil -m cp -r), or give it to a Kubeflow or Vertex package, whose "
                                         "tasks read gs:// (compile --data-dir)")
    return _home_expanded(text)


def _home_expanded(text: str) -> pathlib.Path:
    try:
        return pathlib.Path(text).expanduser()  # --data-dir=~/pets: no shell expands a ~ after an =
    except RuntimeError:  # ~someone: no such user
        raise argparse.ArgumentTypeError(f"{shown_name(text)}: no home folder for {shown_name(text.split('/')[0])}"
                                         ) from None


def local_pathlib(text: str) -> pathlib.Path:
    """local_path, as a pathlib.Path, a leading ~ expanded (--output-dir=~/runs, which no shell expands)."""
    return _home_expanded(local_path(text))


def root_pathlib(text: str) -> pathlib.Path:
    """local_pathlib for a pipeline's root (--output-dir), whose path must be UTF-8 (as the folder it names, from
    the working directory): TensorFlow's file functions and ML Metadata's records, which every command uses on the
    root, take only UTF-8, and a name Python could not decode would otherwise end a command in a traceback."""
    path = local_pathlib(text)
    if not _is_utf8(os.path.abspath(path)):
        raise argparse.ArgumentTypeError(f"{shown_name(os.path.abspath(path))}: its path is not valid UTF-8, which "
                                         "TensorFlow's file functions cannot take: choose a folder whose name is")
    return path


def root_text(text: str) -> str:
    """An argparse type for --root (gs://... or a local path): UTF-8, for the same reason as root_pathlib."""
    if not _is_utf8(text):
        raise argparse.ArgumentTypeError(f"{shown_name(text)} is not valid UTF-8, which TensorFlow's file functions "
                                         "cannot take: choose a root whose name is")
    return text


def utf8_text(text: str) -> str:
    """An argparse type for free text the command keeps (a rollback's reason, in ML Metadata and the push record,
    which hold UTF-8 only): bytes that are not UTF-8 are refused, naming them."""
    if not _is_utf8(text):
        raise argparse.ArgumentTypeError(f"{shown_name(text)} is not valid UTF-8 text")
    return text


def _is_utf8(text: str) -> bool:
    """Whether `text` is what it says: Python keeps the bytes of an argument or a name that is not UTF-8 as lone
    surrogates, which no UTF-8 encoder takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def photo_path(text: str) -> pathlib.Path:
    """A photo or folder on this machine; a URL, or `-` for standard input, is refused by name (as a path, the
    first would read as another path, "http:/host/...", and both as files that are not there)."""
    if "://" in text:
        raise argparse.ArgumentTypeError(f"{shown_name(text)} is a URL: predict reads files on this machine; "
                                         "download it first (or ask a model server with --url)")
    if text == "-":
        raise argparse.ArgumentTypeError("- (standard input) is not read: give image files or folders")
    return pathlib.Path(text)
