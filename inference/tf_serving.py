"""A version loaded as TF Serving loads it, and the check that TF Serving can run it.

TF Serving (and KServe's TF Serving runtime) never runs Python: its loader
imports the SavedModel's MetaGraph tagged `serve` into a graph of its own,
restores the variables with the graph's own restore op in a session, replays
the warm-up requests (a failing one fails the load) and runs each request's
signature by its tensors' names. `tf.saved_model.load`, which the Evaluator
and `predict` use, restores through the SavedModel's object graph instead, and
so answers for a model whose variables the restore op never writes: a Keras 3
model exported with its variables tracked by their Keras wrappers, as this
pipeline exported before 2026-11-26, loads in TF Serving and then fails every
request ("Could not find variable ..."). Serving such a version again
(`rollback`) is refused by `problem`, which runs it the way TF Serving does.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from contract import features, layout
from contract.errors import first_line, storage_fault


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

    def run(self, signature: str, inputs: dict) -> dict[str, np.ndarray]:
        spec = self.signatures[signature]
        feed = {spec.inputs[name].name: value for name, value in inputs.items()}
        return self.session.run({name: tensor.name for name, tensor in spec.outputs.items()}, feed)

    def replay_warmup(self) -> int:
        """Runs the version's warm-up requests, as TF Serving does before it reports the version AVAILABLE (a
        failing one fails the load); returns how many ran."""
        from tensorflow_serving.apis import prediction_log_pb2

        path = os.path.join(self.model_dir, layout.WARMUP_FILE)
        if not tf.io.gfile.exists(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
            self.run(request.model_spec.signature_name or features.SERVING_SIGNATURE,
                     {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()})
            count += 1
        return count

    def close(self) -> None:
        self.session.close()


def _reason(error: BaseException) -> str:
    # TensorFlow follows a missing variable's line with a paragraph of guesses about TF1 and a debug string
    return first_line(error, with_type=True).split(" This could mean")[0]


def _one_image() -> bytes:
    return tf.io.encode_jpeg(tf.fill([8, 8, 3], tf.constant(128, tf.uint8))).numpy()


def problem(model_dir: str) -> str | None:
    """None when TF Serving's loader can run the version in `model_dir`; else why not, in one line.

    Its warm-up requests are replayed as TF Serving replays them; a version
    without any answers one request of its serving signature. A fault of the
    storage is raised, not reported as the version's: the version may be fine.
    """
    try:
        bundle = SessionBundle(model_dir)
    except (tf.errors.OpError, OSError, RuntimeError, ValueError) as error:
        if isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError)):
            raise storage_fault(error) from None
        return f"TF Serving's loader fails on it ({_reason(error)})"
    try:
        if bundle.replay_warmup() == 0:
            spec = bundle.signatures.get(features.SERVING_SIGNATURE)
            if spec is None:
                return f"it has no {features.SERVING_SIGNATURE!r} signature, which TF Serving answers by default"
            image = np.array([_one_image()], dtype=object)
            bundle.run(features.SERVING_SIGNATURE, {name: image for name in spec.inputs})
    except (tf.errors.OpError, KeyError, ValueError, TypeError) as error:
        if isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError)):
            raise storage_fault(error) from None
        return f"it loads, but every request to it fails ({_reason(error)})"
    finally:
        bundle.close()
    return None
