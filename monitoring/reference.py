"""The served model and the data it was judged on: what a traffic window is compared with.

The served version is the one contract.served names (its files checked against their digests); ML Metadata
says which model it holds and the spans that model was trained on (reporting.model_history). The reference is
the held-out splits of those spans (eval and test): images the model never learned from, drawn as the training
data was, so that a window of traffic with no drift is exchangeable with them and each test keeps its level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import posixpath
from typing import Iterator

from contract import features, layout, storage
from contract import served as served_lib
from contract.errors import CommandError
from contract.layout import RunLayout

HELD_OUT = (layout.SELECTION_SPLIT, layout.TEST_SPLIT)


class NoServedModelError(CommandError):
    """Nothing is served under the root, or what is cannot be measured against its data; the line says which."""


class NothingPushedYet(NoServedModelError):
    """No model was ever pushed under the root (its first runs' models were not blessed, or none has run): no
    fault, and a scheduled check says so rather than failing every hour until a model is pushed."""


@dataclasses.dataclass(frozen=True)
class ServedModel:
    version: int
    version_dir: str
    model_id: int | None  # the Model artifact in ML Metadata (None: no record of it)
    spans: list[int]


def served_model(where: RunLayout, store: str | None = None) -> ServedModel:
    """The served version, its Model's id and the spans it was trained on; NoServedModelError if there is none or
    its spans cannot be found. `store`: as reporting.model_history.pushed_versions takes it (default: the root's
    own SQLite file)."""
    from reporting import model_history

    serving_dir = str(where.serving_dir)
    state = served_lib.served(serving_dir)
    scoped, store = store is not None, store or str(where.metadata_path)  # a deployment's store may be shared
    pushed = []
    if "://" in store or os.path.exists(store):
        pushed = model_history.pushed_versions(store, serving_dir, scoped)
    if state.version is None:
        ran = storage.backend.isdir(str(where.runs_dir)) and bool(storage.backend.listdir(str(where.runs_dir)))
        if not scoped and ran and not os.path.exists(store):  # its history gone: whether it pushed is unknown
            raise NoServedModelError(f"nothing is served under {serving_dir}, and the root's ML Metadata store "
                                     f"{store} is gone: whether a model was pushed cannot be told")
        if state.problem() is None and not pushed:
            raise NothingPushedYet(f"nothing is served under {serving_dir}: no model has been pushed there yet")
        numbers = ", ".join(str(v.version) for v in pushed)
        why = state.problem() or (f"versions {numbers} pushed, none of them there now" if len(pushed) > 1
                                  else f"version {numbers} pushed, no longer there")
        raise NoServedModelError(f"nothing is served under {serving_dir} ({why}): there is no model to monitor")
    records = [v for v in pushed if v.version == state.version]
    if not records or not records[0].spans:
        raise NoServedModelError(f"version {state.version} is served, but {store} does not say which "
                                 "spans it was trained on: its data cannot be compared with traffic")
    return ServedModel(state.version, posixpath.join(serving_dir, str(state.version)), records[0].model_id,
                       records[0].spans)


def _record_files(folder: str) -> list[str]:
    if not storage.backend.isdir(folder):
        return []
    return sorted(posixpath.join(folder, name) for name in storage.backend.files(folder) if "/" not in name)


def held_out_images(examples_root: str, spans: list[int], limit: int) -> Iterator[tuple[bytes, int, int]]:
    """(JPEG, stored height, stored width) of up to `limit` images of the spans' held-out splits, read in file
    order (ingest writes each split in a mixed order, so the first ones are a sample of all), one at a time,
    through contract.storage (a root on this machine or in a bucket alike)."""
    import gzip

    import tensorflow as tf

    from traffic.tfrecord import read_tfrecords

    files = [path for span in spans for split in HELD_OUT
             for path in _record_files(posixpath.join(layout.span_dir(examples_root, span), split))]
    given = 0
    for path in files:
        with storage.backend.open(path, "rb") as raw, (gzip.GzipFile(fileobj=raw) if path.endswith(".gz")
                                                        else contextlib.nullcontext(raw)) as stream:
            for record in read_tfrecords(stream, path):
                if given >= limit:
                    return
                stored = tf.train.Example.FromString(record).features.feature
                yield (stored[features.IMAGE_KEY].bytes_list.value[0], stored[features.HEIGHT_KEY].int64_list.value[0],
                       stored[features.WIDTH_KEY].int64_list.value[0])
                given += 1
