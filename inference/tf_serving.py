"""A version loaded as TF Serving loads it, and the check that TF Serving can run it.

TF Serving (and KServe's TF Serving runtime) never runs Python: its loader
imports the SavedModel's MetaGraph tagged `serve` into a graph of its own,
restores the variables with the graph's own restore op in a session, replays
the warm-up requests (a failing one fails the load; more than 1,000 fail it
too) and runs each request's signature by its tensors' names.
`tf.saved_model.load`, which the Evaluator and `predict` use, restores through
the SavedModel's object graph instead, and so answers for a model whose
variables the restore op never writes: a Keras 3 model exported with its
variables tracked by their Keras wrappers, as this pipeline exported before
2026-11-26, loads in TF Serving and then fails every request ("Could not find
variable ..."). Serving such a version again (`rollback`) is refused by
`problem`, which loads it the way TF Serving does and sends it nothing TF
Serving would not send.
"""

from __future__ import annotations

import os
import time
from typing import Iterator

import numpy as np
import tensorflow as tf

from contract import features, layout
from contract.errors import first_line, printable, storage_fault
from contract.interrupts import Interrupts

# TF Serving refuses a warm-up file of more records than this (its kMaxNumRecords).
MAX_WARMUP_RECORDS = 1000
# A warm-up request of the pipeline's holds at most 32 images; a tensor that claims far more is not a request
# to allocate.
MAX_WARMUP_ELEMENTS = 4096
# The whole check, its warm-up requests included; a request that has not answered by then is a version TF
# Serving would never finish loading.
CHECK_SECONDS = 120
MAX_REASON_CHARS = 300

# Errors of reading the version's files, not of the version: the storage failed, the version may be fine.
_STORAGE_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.PermissionDeniedError,
                   tf.errors.ResourceExhaustedError, tf.errors.AbortedError)


class UnservableError(ValueError):
    """What TF Serving would make of the version, in words."""


class SessionBundle:
    """A SavedModel as TF Serving holds it: the MetaGraph tagged `serve` imported into a graph of its own, its
    variables restored by the graph's restore op in a Session, its signatures run by tensor name."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        try:
            with self.graph.as_default():
                meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], model_dir)
        except BaseException:
            self.session.close()
            raise
        self.signatures = dict(meta_graph.signature_def)

    def run(self, signature: str, inputs: dict, timeout_seconds: float | None = None) -> dict[str, np.ndarray]:
        spec = self.signatures.get(signature)
        if spec is None:
            raise UnservableError(f"it has no signature {signature!r}")
        unknown = sorted(set(inputs) - set(spec.inputs))  # a protobuf map would add an empty entry for it
        if unknown:
            raise UnservableError(f"signature {signature!r} has no input {unknown[0]!r}")
        feed = {spec.inputs[name].name: value for name, value in inputs.items()}
        options = None if timeout_seconds is None else \
            tf.compat.v1.RunOptions(timeout_in_ms=max(1, int(timeout_seconds * 1000)))
        return self.session.run({name: tensor.name for name, tensor in spec.outputs.items()}, feed, options=options)

    def unrestored_variables(self) -> list[str]:
        """The variables some signature reads that the restore op left unwritten: TF Serving fails every request
        that reads one ("Could not find variable")."""
        outputs = sorted({tensor.name.split(":")[0] for spec in self.signatures.values()
                          for tensor in spec.outputs.values()})
        if not outputs:
            return []
        read = tf.compat.v1.graph_util.extract_sub_graph(self.graph.as_graph_def(), outputs)
        handles = sorted(node.name for node in read.node if node.op == "VarHandleOp")
        if not handles:
            return []
        with self.graph.as_default():
            written = [tf.raw_ops.VarIsInitializedOp(resource=self.graph.get_tensor_by_name(f"{name}:0"))
                       for name in handles]
        return [name for name, ok in zip(handles, self.session.run(written)) if not ok]

    def warmup_requests(self) -> Iterator[tuple[str, dict]]:
        """(signature, inputs) of each warm-up request, read as TF Serving reads them; UnservableError for a file
        its loader refuses."""
        from google.protobuf.message import DecodeError
        from tensorflow_serving.apis import prediction_log_pb2

        path = os.path.join(self.model_dir, layout.WARMUP_FILE)
        if not tf.io.gfile.exists(path):
            return
        for number, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator(), start=1):
            if number > MAX_WARMUP_RECORDS:
                raise UnservableError(f"its warm-up file holds more than {MAX_WARMUP_RECORDS:,} requests, which "
                                      "TF Serving refuses to load")
            try:
                log = prediction_log_pb2.PredictionLog.FromString(record)
            except DecodeError:
                raise UnservableError(f"warm-up record {number} is not a PredictionLog") from None
            if log.WhichOneof("log_type") != "predict_log":
                raise UnservableError(f"warm-up record {number} is a {log.WhichOneof('log_type') or 'empty'} "
                                      "record; the pipeline writes predict requests only")
            request = log.predict_log.request
            inputs = {}
            for name, proto in request.inputs.items():
                elements = int(np.prod([dim.size for dim in proto.tensor_shape.dim], dtype=np.float64))
                if elements > MAX_WARMUP_ELEMENTS or any(dim.size < 0 for dim in proto.tensor_shape.dim):
                    raise UnservableError(f"warm-up record {number}'s input {name!r} claims {elements:,} values")
                inputs[name] = tf.make_ndarray(proto)
            yield request.model_spec.signature_name or features.SERVING_SIGNATURE, inputs

    def replay_warmup(self, timeout_seconds: float | None = None) -> int:
        """Runs the version's warm-up requests, as TF Serving does before it reports the version AVAILABLE (a
        failing one fails the load); returns how many ran."""
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        count = 0
        for signature, inputs in self.warmup_requests():
            self.run(signature, inputs, None if deadline is None else deadline - time.monotonic())
            count += 1
        return count

    def close(self) -> None:
        self.session.close()


def _reason(error: BaseException) -> str:
    # TensorFlow follows a missing variable's line with a paragraph of guesses about TF1 and a debug string
    return first_line(error, with_type=True).split(" This could mean")[0]


def _said(text: str) -> str:
    """One line of a terminal, not too long: a crafted model's names and messages reach it."""
    text = printable(text)
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 3] + "..."


def _storage(error: BaseException) -> bool:
    return isinstance(error, _STORAGE_ERRORS) or (isinstance(error, OSError) and error.errno is not None)


def problem(model_dir: str, seconds: float = CHECK_SECONDS) -> str | None:
    """None when TF Serving's loader can run the version in `model_dir`; else why not, in one line.

    Loaded as TF Serving loads it; every variable its signatures read must be
    one the restore op wrote; its warm-up requests are replayed as TF Serving
    replays them, within `seconds` in all. A fault of the storage is raised
    (contract.errors.StorageFaultError), not reported as the version's: the
    version may be fine. A Ctrl-C that TensorFlow's finalizers swallowed is
    raised when the check ends.
    """
    with Interrupts() as interrupts:
        said = _problem(model_dir, seconds)
        interrupts.check()
    return said


def _problem(model_dir: str, seconds: float) -> str | None:
    try:
        bundle = SessionBundle(model_dir)
    except (tf.errors.OpError, OSError, RuntimeError, ValueError) as error:
        if _storage(error):
            raise storage_fault(error) from None
        return _said(f"TF Serving's loader fails on it ({_reason(error)})")
    try:
        if features.SERVING_SIGNATURE not in bundle.signatures:
            return _said(f"it has no {features.SERVING_SIGNATURE!r} signature, which TF Serving answers by default")
        unwritten = bundle.unrestored_variables()
        if unwritten:
            return _said(f"its signatures read {len(unwritten)} variables its restore op never writes "
                         f"({', '.join(unwritten[:2])}{', ...' if len(unwritten) > 2 else ''}): TF Serving would "
                         "fail every request with \"Could not find variable\", as with every version exported "
                         "before 2026-11-26")
        bundle.replay_warmup(seconds)
    except UnservableError as error:
        return _said(str(error))
    except tf.errors.DeadlineExceededError:
        return _said(f"its warm-up requests did not all answer within {seconds:g} s")
    except (tf.errors.OpError, OSError, KeyError, ValueError, TypeError) as error:
        if _storage(error):
            raise storage_fault(error) from None
        return _said(f"a warm-up request fails ({_reason(error)})")
    finally:
        bundle.close()
    return None
