"""Where images come from, each source turned into the same items.

An item is one file or record: its id (a relative path, or `file#row`), its
label or the reason it has none, the split its source gave it (if any), and
a `unit` from which a worker reads its bytes. Sources:
- class folders: the nearest ancestor folder named cat/cats/dog/dogs (any
  case) gives the label, so `PetImages/Cat/1.jpg` and TensorFlow's
  `cats_and_dogs_filtered/train/cats/cat.1.jpg` both work; an ancestor named
  train / validation / val / eval / test gives the split;
- Kaggle dogs-vs-cats: files named `cat.123.jpg` / `dog.45.jpg`;
- Parquet files in Hugging Face's `Bingsu/Cat_and_Dog` form: an `image` struct
  holding `bytes`, and `labels` 0 = cat / 1 = dog;
- TFDS `cats_vs_dogs` from a local `data_dir`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import stat
from typing import Callable, Iterable, Iterator

from contract import layout
from contract.errors import CommandError, undecodable_escaped
from ingest.listing import SPLIT_FOLDERS, Listing, is_uri, kind_of, label_for_folder, local_files, remote_files

_KAGGLE_NAME = re.compile(r"^(cat|dog)\.\d+\.[A-Za-z0-9]+$", re.IGNORECASE)
TFDS_NAME = "cats_vs_dogs"


class SourceError(CommandError, ValueError):
    """A data source cannot be read; the message says what to do."""


class RefusedFile(ValueError):
    """A file not read: the message is the reason the report gives. Internal, as ingest.images.RejectedImage: the
    file is listed, the ingest goes on."""


class FileTooLarge(RefusedFile):
    """A file above the size cap: never read."""


class NotRegularFile(RefusedFile):
    """A named pipe, a socket, a device (or a link to one) where a file was listed: never read (a pipe would wait
    for a writer, a device give bytes without end)."""


NOT_UTF8 = "name is not valid UTF-8"
_READ_ON = 1 << 16  # what a local file is read by once the bytes its size promised have come


printable = undecodable_escaped  # a file's or a record's name, as reports and examples hold it


@dataclasses.dataclass(frozen=True)
class Item:
    id: str
    label: int | None
    split: str | None  # "train" / "eval" / "test" when the source says, else None
    unit: str | bytes  # where a worker reads the image: a file's path (or URI), or the bytes themselves
    problem: str | None = None


def open_binary(path: str):
    """A file opened for reading: locally with open_local, a URI (gs://...) through tf.io.gfile."""
    if is_uri(path):
        import tensorflow as tf

        return tf.io.gfile.GFile(path, "rb")
    return open_local(path)


def open_local(path: str, buffering: int = -1):
    """A local file opened for reading without waiting (a pipe or a device put where a file was listed is refused,
    NotRegularFile, never waited on or read without end); OSError as open() raises it."""
    file = open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC), "rb", buffering=buffering)
    if not stat.S_ISREG(mode := os.fstat(file.fileno()).st_mode):
        file.close()
        raise NotRegularFile(f"not a regular file: {kind_of(mode)}")
    return file


def file_size(path: str) -> int:
    if is_uri(path):
        import tensorflow as tf

        return tf.io.gfile.stat(path).length
    return os.stat(path).st_size


def _too_large(size: int, max_bytes: int) -> FileTooLarge:
    rejection = FileTooLarge(f"{size} bytes, above the file size limit of {max_bytes} bytes (--max-file-mb): not read")
    rejection.size = size
    return rejection


def read_bytes(unit: str | bytes, max_bytes: int | None = None) -> bytes:
    """The bytes of an item; a file above `max_bytes` raises FileTooLarge, read no further than the cap (its size
    is taken first, and a file that grows meanwhile is cut off one byte past it)."""
    if isinstance(unit, bytes):
        return unit
    if not is_uri(unit):
        return _read_local(unit, max_bytes)
    if max_bytes is not None and (size := file_size(unit)) > max_bytes:
        raise _too_large(size, max_bytes)
    with open_binary(unit) as f:
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_large(file_size(unit), max_bytes)
    return data


def _read_local(path: str, max_bytes: int | None) -> bytes:
    """read_bytes of a local file: sized before it is opened (a file above the cap is refused by its size, also one
    this process may not open), then read in a call of that size. A buffered `read(max_bytes + 1)` sets aside the
    whole cap for every file (50 MB: a mapping made and given back), three times the cost of reading a photo; an
    ingest reads every file once."""
    found = os.stat(path)
    if not stat.S_ISREG(found.st_mode):
        raise NotRegularFile(f"not a regular file: {kind_of(found.st_mode)}")
    size = found.st_size
    if max_bytes is not None and size > max_bytes:
        raise _too_large(size, max_bytes)
    with open_local(path, buffering=0) as f:  # checked again: a pipe put in its place since is refused
        limit = size + 1 if max_bytes is None else min(size, max_bytes) + 1
        parts = [f.read(limit)]
        total = len(parts[0])
        # One read returns the file as it was sized. Any other count (a file that grew since, or one that says 0
        # bytes and holds more, as /proc's do, or a read cut short) reads on until a read returns nothing.
        limit = None if max_bytes is None else max_bytes + 1
        while total != size and (limit is None or total < limit):
            part = f.read(_READ_ON if limit is None else min(_READ_ON, limit - total))
            if not part:
                break
            parts.append(part)
            total += len(part)
        if limit is not None and total >= limit:
            raise _too_large(max(os.fstat(f.fileno()).st_size, total), max_bytes)
    return b"".join(parts)


def _folder_item(relative: pathlib.PurePosixPath, location: str) -> Item:
    folders = list(relative.parts[:-1])
    label = next((label_for_folder(p) for p in reversed(folders) if label_for_folder(p) is not None), None)
    split = next((SPLIT_FOLDERS[p.lower()] for p in reversed(folders) if p.lower() in SPLIT_FOLDERS), None)
    problem = None
    if label is None:
        match = _KAGGLE_NAME.match(relative.name)
        if match:
            label = label_for_folder(match.group(1))
        elif folders:
            problem = f"unknown label: no cat(s)/dog(s) folder in {'/'.join(folders)!r} and no cat./dog. file name"
        else:
            problem = "not inside a class folder (cat/ or dog/) and no cat./dog. file name"
    return Item(relative.as_posix(), label, split, location, problem)


def folder_items(root: str | os.PathLike, listed: Listing | None = None) -> list[Item]:
    """Every file below `root` (a path or a gs:// URI), sorted, labelled by folder or Kaggle file name, but an
    operating system's own; a labeling queue's (layout.QUEUE_RECORD at its top) by its cat/ and dog/ folders only.
    `listed`: list_folder(root), listed already."""
    if is_uri(str(root)):
        import tensorflow as tf

        if not tf.io.gfile.isdir(str(root)):
            raise SourceError(f"data directory {str(root)!r} does not exist or is not a directory")
        listed = listed or remote_files(str(root))
        items = [_folder_item(pathlib.PurePosixPath(relative), uri) for relative, uri in listed.files]
        return _queue_items(items) if queue_record(root) is not None else items
    root = pathlib.Path(root)
    if not root.is_dir():
        raise SourceError(f"data directory {str(root)!r} does not exist or is not a directory")
    files, problems, _ = listed or local_files(root)
    items = [_folder_item(pathlib.PurePosixPath(relative), path) if printable(relative) == relative
             else Item(printable(relative), None, None, path, NOT_UTF8) for relative, path in files] + \
        [Item(printable(relative), None, None, str(root / relative), printable(problem))
         for relative, problem in problems]
    return _queue_items(items) if queue_record(root) is not None else items


def queue_record(root: str | os.PathLike) -> bytes | None:
    """The bytes of the commit record (layout.QUEUE_RECORD) at the top of a folder that is a labeling queue,
    None for any other folder or source: a queue's identity, whichever folder a person sorted it in."""
    record = f"{str(root).rstrip('/')}/{layout.QUEUE_RECORD}"
    if is_uri(str(root)):
        import tensorflow as tf

        if not tf.io.gfile.exists(record):
            return None
        with tf.io.gfile.GFile(record, "rb") as f:
            return f.read()
    if not os.path.isfile(record):
        return None
    try:
        with open_local(record) as f:
            return f.read()
    except (OSError, NotRegularFile) as error:
        raise SourceError(f"the labeling queue's record {printable(record)!r} cannot be read "
                          f"({getattr(error, 'strerror', None) or error})") from None


# A labeling queue's own files (monitoring.queue), at its top level: not images of the source.
QUEUE_FILES = frozenset({layout.QUEUE_RECORD, layout.QUEUE_README, layout.CONTACT_SHEET})
_NO_LABEL = ("unknown label", "not inside a class folder")  # _folder_item's problems
NOT_SORTED_PREFIX = "not sorted: "
NOT_SORTED = NOT_SORTED_PREFIX + "move it into cat/ or dog/ of the labeling queue to ingest it (left in {where})"


def left_in(relative: str) -> str:
    """The folder of a labeling queue an image was left in: its top-level folder, or the queue's top folder."""
    parts = pathlib.PurePosixPath(relative).parts
    return f"{parts[0]}/" if len(parts) > 1 else "the queue's top folder"


def _queue_items(items: list[Item]) -> list[Item]:
    """The items of a labeling queue: labelled by its top-level cat/ or dog/ folder alone (a file's name, or a
    folder deeper down, says nothing there); every other image is reported as not sorted, never ingested."""
    kept = []
    for item in items:
        parts = pathlib.PurePosixPath(item.id).parts
        if len(parts) == 1 and parts[0] in QUEUE_FILES:
            continue
        if len(parts) > 1 and label_for_folder(parts[0]) is not None and not item.problem:
            kept.append(dataclasses.replace(item, label=label_for_folder(parts[0]), split=None))
        else:
            where = left_in(item.id)
            unread = item.problem and not item.problem.startswith(_NO_LABEL)  # a file that could not be read says so
            problem = item.problem if unread else NOT_SORTED.format(where=where)
            kept.append(Item(item.id, None, None, item.unit, problem))
    return kept


def parquet_items(path: str | os.PathLike) -> list[Item]:
    """Rows of Hugging Face `Bingsu/Cat_and_Dog`-style Parquet files (one file or a folder of them)."""
    import pyarrow.parquet as pq

    path = pathlib.Path(path)
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise SourceError(f"no Parquet files at {str(path)!r}")
    items = []
    for file in files:
        name = printable(file.relative_to(path).as_posix() if path.is_dir() else file.name)
        try:
            with open_local(str(file)) as f:  # opened here: pyarrow takes a path as UTF-8 only
                table = pq.read_table(f)
        except Exception as error:  # pyarrow raises several types for a damaged file
            raise SourceError(f"cannot read Parquet file {printable(str(file))!r}: {error}") from None
        missing = {"image", "labels"} - set(table.column_names)
        if missing:
            raise SourceError(f"Parquet file {printable(str(file))!r} has no column(s) {sorted(missing)}: expected an "
                              f"'image' struct with 'bytes' and an int 'labels' (0 = cat, 1 = dog); "
                              f"found {table.column_names}")
        split = next((SPLIT_FOLDERS[p] for p in reversed(name.lower().replace("-", "/").split("/"))
                      if p in SPLIT_FOLDERS), None)
        for row, (image, label) in enumerate(zip(table.column("image").to_pylist(),
                                                 table.column("labels").to_pylist())):
            item_id = f"{name}#{row}"
            data = image.get("bytes") if isinstance(image, dict) else None
            if label not in (0, 1):
                items.append(Item(item_id, None, split, b"", f"unknown label {label!r} (expected 0 or 1)"))
            elif data is None:
                items.append(Item(item_id, label, split, b"", "no image bytes in the 'image' struct"))
            else:
                items.append(Item(item_id, label, split, data))
    return items


def tfds_items(data_dir: str | os.PathLike) -> Iterator[Item]:
    """TFDS cats_vs_dogs from a local data_dir, without downloading."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(TFDS_NAME, data_dir=str(data_dir))
    if not tf_io_exists(os.path.join(builder.data_dir, "dataset_info.json")):
        raise SourceError(
            f"TFDS {TFDS_NAME} is not prepared in {str(data_dir)!r} (looked in {builder.data_dir}). With network "
            f"access, prepare it there first: python -c \"import tensorflow_datasets as tfds; "
            f"tfds.builder('{TFDS_NAME}', data_dir='{data_dir}').download_and_prepare()\" "
            f"(or on another machine, then copy the folder).")
    names = builder.info.features["label"].names
    for split in builder.info.splits:
        dataset = builder.as_dataset(split=split, shuffle_files=False,
                                     decoders={"image": tfds.decode.SkipDecoding()})
        for index, example in enumerate(dataset.as_numpy_iterator()):
            filename = example.get("image/filename", b"")
            item_id = f"{split}/{filename.decode('utf-8', 'backslashreplace') if filename else index}"
            label = label_for_folder(names[int(example["label"])])
            yield Item(item_id, label, None, bytes(example["image"]))


def tf_io_exists(path: str) -> bool:
    import tensorflow as tf

    return tf.io.gfile.exists(path)


DEMO = "demo"  # the generated demo images (ingest.synthetic): what `run --demo` ingests, no kind of LISTERS

# Source kinds and how each lists its items: `ingest(kind, location, ...)` and the command line's source flags.
LISTERS: dict[str, Callable[[str], Iterable[Item]]] = {"folder": folder_items, "parquet": parquet_items,
                                                       "tfds": tfds_items}
