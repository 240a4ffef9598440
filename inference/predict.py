"""Classify image files with a pushed serving model.

Files go through the same checks and normalization as ingest (EXIF rotation,
CMYK, PNG...), so a photo is seen as the model saw its training data. A file
that cannot be read is reported with its reason; the rest are classified.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib

from config import DataConfig
from contract import features, layout, served, storage
from contract.errors import CommandError, RunFailedError, first_line, printable, shown_name
from inference.photo_files import find_files  # noqa: F401 - predict.find_files, as callers know it
from ingest import listing, sources
from ingest.images import RejectedImage, check_image

MAX_PHOTO_BYTES = DataConfig.max_file_mb << 20


class NoModelError(CommandError, FileNotFoundError):
    """No pushed model where one was expected; the message names the place."""


@dataclasses.dataclass
class Prediction:
    path: str
    class_name: str | None
    dog_probability: float | None
    error: str | None = None


def latest_version_dir(serving_dir: str | os.PathLike) -> pathlib.Path:
    """The served version's folder (contract.served: the one the serving config names, if its files match their
    digests), as `models` and `rollback` have it."""
    serving_dir = pathlib.Path(serving_dir)
    state = served.served(str(serving_dir))
    if state.version is not None:
        return serving_dir / str(state.version)
    if state.problem():
        raise NoModelError(f"no model served under {serving_dir}: {state.problem()}; pass --model DIR, or roll back")
    raise NoModelError(f"no pushed model under {serving_dir}: run the pipeline first, or pass --model DIR")


def given_model_dir(model_dir: str | os.PathLike) -> pathlib.Path:
    """A folder given by hand (--model), refused where it is or holds a symbolic link (never followed), and
    where it has a commit record (a pushed version) that its files do not match: that is not the model pushed."""
    model_dir = pathlib.Path(model_dir)
    linked = storage.link_problem(model_dir)
    if linked:
        raise NoModelError(f"--model {model_dir}: {linked}")
    if (model_dir / layout.DIGESTS_FILE).exists():
        why = served.damage(str(model_dir))
        if why:
            raise NoModelError(f"--model {model_dir} is a pushed version that cannot be used as pushed: {why}")
    return model_dir


class ServerError(RunFailedError):
    """A model server did not answer, or answered something other than predictions; the message says which."""


def load_model(model_dir: str | os.PathLike):
    """A classifier of the SavedModel in `model_dir` ([image bytes] -> {output: array}, predict_files' `serve`);
    NoModelError names a folder that holds none."""
    import tensorflow as tf

    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        raise NoModelError(f"no model folder at {model_dir}")
    if not (model_dir / "saved_model.pb").is_file():
        raise NoModelError(f"{model_dir} holds no SavedModel (saved_model.pb): pass a folder such as "
                           "<output-dir>/serving_model/<version>")
    try:
        signature = tf.saved_model.load(str(model_dir)).signatures[features.SERVING_SIGNATURE]
    except (OSError, ValueError, KeyError, tf.errors.OpError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise NoModelError(f"cannot load the SavedModel in {model_dir}: {first_line}") from None
    return lambda images: {name: tensor.numpy()
                           for name, tensor in signature(**{features.IMAGE_INPUT: tf.constant(images)}).items()}


def predict_url(url: str, model_name: str) -> str:
    """The predict address of a TF Serving or KServe V1 REST endpoint: `url` itself when it ends in `:predict`,
    else `url`/v1/models/<model_name>:predict. CommandError for anything but an http(s) address of a host."""
    import urllib.parse

    refused = CommandError(f"--url {printable(url)!r}: give the server's http:// or https:// address, e.g. "
                           "http://localhost:8501 (TF Serving's REST port), or the whole address ending in :predict")
    if any(not char.isprintable() or char.isspace() for char in url):
        raise refused
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        raise refused from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise refused
    return url if parts.path.endswith(":predict") else f"{url.rstrip('/')}/v1/models/{model_name}:predict"


def shown_url(url: str) -> str:
    """An address as said to the user: without the password it may carry."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, f"[{host}]" if ":" in parts.hostname else host, parts.path, "", ""))


ANSWER_LIMIT = 64 << 20  # bytes of one answer: 32 images' predictions are a few kilobytes


def remote_model(url: str, read_seconds: float = 30.0, whole_seconds: float = 300.0):
    """A classifier like load_model's that asks the REST endpoint `url` (predict_url), in TF Serving's row format:
    each image as {"b64": ...}, an object of outputs per image back. Every answer is checked (one prediction of
    this pipeline's model per image: a probability in [0, 1] and a class); ServerError in one line otherwise, and
    for an endpoint that does not answer within `read_seconds` a read, `whole_seconds` an answer, or redirects."""
    import base64
    import http.client
    import json
    import time
    import urllib.error
    import urllib.parse
    import urllib.request

    class Refuse(urllib.request.HTTPRedirectHandler):  # a redirected POST would arrive as a GET without images
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(Refuse)
    shown = shown_url(url)
    parts = urllib.parse.urlsplit(url)
    headers = {"Content-Type": "application/json"}
    if parts.username is not None:  # user:password@host: sent as HTTP's basic authentication, never shown
        secret = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode("ascii")
        url = urllib.parse.urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[1], parts.path, "", ""))

    def answer_of(images: list[bytes]) -> bytes:
        body = json.dumps({"instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images]})
        request = urllib.request.Request(url, data=body.encode(), method="POST", headers=headers)
        deadline = time.monotonic() + whole_seconds
        try:
            with opener.open(request, timeout=read_seconds) as response:
                data = b""
                while chunk := response.read(1 << 16):
                    data += chunk
                    if len(data) > ANSWER_LIMIT or time.monotonic() > deadline:
                        raise ServerError(f"{shown} sent more than {ANSWER_LIMIT >> 20} MiB or took over "
                                          f"{whole_seconds:.0f} s to answer {len(images)} images")
                return data
        except urllib.error.HTTPError as error:
            said = printable(error.read(300).decode("utf-8", "replace").strip())
            raise ServerError(f"{shown} answered {error.code} {printable(str(error.reason))}: {said}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            raise ServerError(f"no answer from {shown}: {printable(first_line(reason, with_type=True))}") from None

    def classify(images: list[bytes]) -> dict:
        try:
            answer = json.loads(answer_of(images))
        except (ValueError, RecursionError):
            raise ServerError(f"{shown} answered with something that is not JSON") from None
        rows = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(rows, list) or len(rows) != len(images):
            raise ServerError(f"{shown} did not answer one prediction per image ('predictions', {len(images)})")
        for index, row in enumerate(rows):
            problem = _prediction_problem(row)
            if problem:
                raise ServerError(f"{shown} answered instance {index} with {problem}: not a prediction of this "
                                  "pipeline's model")
        return {name: [row.get(name, default) for row in rows]
                for name, default in ((features.PROBABILITY_OUTPUT, math.nan), (features.CLASS_OUTPUT, ""),
                                      (features.VALID_OUTPUT, True), (features.ERROR_OUTPUT, ""))}

    return classify


def _prediction_problem(row) -> str | None:
    """What is wrong with one answered prediction; None for one of this pipeline's model."""
    if not isinstance(row, dict):
        return "no object of outputs"
    valid, error = row.get(features.VALID_OUTPUT, True), row.get(features.ERROR_OUTPUT, "")
    if not isinstance(valid, bool) or not isinstance(error, str):
        return f"'{features.VALID_OUTPUT}' not true or false, or '{features.ERROR_OUTPUT}' not a text"
    if not valid:
        return None if error else "an image refused without a reason"
    probability, name = row.get(features.PROBABILITY_OUTPUT), row.get(features.CLASS_OUTPUT)
    if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
        return f"'{features.PROBABILITY_OUTPUT}' {printable(json.dumps(probability))[:40]}, not a probability"
    if name not in features.LABEL_NAMES:
        return f"'{features.CLASS_OUTPUT}' {printable(json.dumps(name))[:40]}, not one of {features.LABEL_NAMES}"
    return None


def predict_files(serve, files: list[pathlib.Path], batch_size: int = 32,
                  sent: dict[int, bytes] | None = None) -> tuple[list[Prediction], dict[int, bytes]]:
    """(a prediction per file, {index: normalized JPEG bytes} of the readable ones), `serve` from load_model or
    remote_model. `sent`, if given, gets {index: bytes} of every image the model was given, those it refused
    included."""
    results: list[Prediction] = []
    jpegs: dict[int, bytes] = {}
    batch: list[tuple[int, bytes]] = []

    def text(value) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    def flush():
        if not batch:
            return
        out = serve([jpeg for _, jpeg in batch])
        valid = out.get(features.VALID_OUTPUT, [True] * len(batch))
        errors = out.get(features.ERROR_OUTPUT, [b""] * len(batch))
        for (index, _), probability, name, ok, error in zip(batch, out[features.PROBABILITY_OUTPUT],
                                                            out[features.CLASS_OUTPUT], valid, errors):
            if not ok:  # the model's own decoder refused what ingest's checks let through
                results[index].error = printable(text(error))
                jpegs.pop(index, None)
                continue
            results[index].dog_probability = float(probability)
            results[index].class_name = text(name)
        batch.clear()

    for path in files:
        results.append(Prediction(str(path), None, None))
        try:
            jpeg = check_image(_photo_bytes(path)).jpeg
        except RejectedImage as rejection:
            results[-1].error = rejection.reason
            continue
        except OSError as error:
            results[-1].error = f"cannot be read: {listing.why_not_read(path, error)}"
            continue
        jpegs[len(results) - 1] = jpeg
        if sent is not None:
            sent[len(results) - 1] = jpeg
        batch.append((len(results) - 1, jpeg))
        if len(batch) >= batch_size:
            flush()
    flush()
    return results, jpegs


def _photo_bytes(path: pathlib.Path) -> bytes:
    """A photo's bytes, read as ingest reads a file (never a pipe or a device, never more than the size a photo may
    have: ingest's default --max-file-mb); RejectedImage with the reason for any other entry."""
    try:
        return sources.read_bytes(str(path), MAX_PHOTO_BYTES)
    except sources.FileTooLarge as rejection:
        raise RejectedImage(f"{rejection.size} bytes, above the {MAX_PHOTO_BYTES >> 20} MiB a photo may have: "
                            "not read") from None
    except sources.NotRegularFile as rejection:
        if f"{rejection}".endswith("a folder"):  # find_files keeps a folder it could not list, to be reported,
            why = _why_unlisted(path)  # and a link back to a folder above
            raise RejectedImage(f"a folder that cannot be listed{why}: its files were not classified" if why else
                                "a link back to a folder this one is in: not followed (it would walk that folder "
                                "again, and all it holds)") from None
        raise RejectedImage(str(rejection)) from None


def _why_unlisted(folder: pathlib.Path) -> str:
    try:
        os.scandir(folder).close()
        return ""
    except OSError as error:
        return f" ({error.strerror or error})"


def record(traffic_root: str, predictions: list[Prediction], sent: dict[int, bytes], version: int):
    """Records what the model was given and answered as a traffic span (the traffic package, origin `predict`),
    as the traffic sink records a served model's requests, all the images as one request. Returns the writer (its
    spans, or what was lost and why)."""
    import time
    import uuid

    from contract.traffic import PREDICT_ORIGIN
    from traffic.records import TrafficRecord
    from traffic.writer import TrafficWriter

    writer = TrafficWriter(traffic_root, batch_size=max(len(sent), 1), max_seconds=math.inf)
    request_id, now_ms = f"predict-{uuid.uuid4().hex}", int(time.time() * 1000)
    for index in sorted(sent):
        score = predictions[index].dog_probability
        writer.add(TrafficRecord(image=sent[index], score=math.nan if score is None else score, version=version,
                                 time_ms=now_ms, request_id=request_id, origin=PREDICT_ORIGIN))
    writer.flush()
    return writer


def explain(model_dir: str | os.PathLike, jpegs: dict[int, bytes]) -> dict:
    """{index: Grad-CAM heat map} from the Keras model kept beside the SavedModel."""
    import keras
    import tensorflow as tf

    from inference.gradcam import gradcam
    from trainer import preprocessing

    classifier = keras.models.load_model(os.path.join(model_dir, layout.KERAS_MODEL_FILE), compile=False)
    size = classifier.input_shape[1]
    indices = sorted(jpegs)
    heat = {}
    for start in range(0, len(indices), 16):
        chunk = indices[start:start + 16]
        pixels = tf.cast(preprocessing.decode_and_resize(tf.constant([jpegs[i] for i in chunk]), size), tf.float32)
        heat.update(zip(chunk, gradcam(classifier, pixels.numpy())))
    return heat


def table(predictions: list[Prediction]) -> str:
    """One line a file: a name holding a newline or another control character is shown with it escaped."""
    paths = [shown_name(p.path) for p in predictions]
    width = max([len(path) for path in paths] + [4])
    lines = [f"{'file':<{width}}  {'class':<6}{'dog probability':>16}"]
    for path, p in zip(paths, predictions):
        if p.error:
            lines.append(f"{path:<{width}}  UNREADABLE: {p.error}")
        else:
            lines.append(f"{path:<{width}}  {p.class_name:<6}{p.dog_probability:>16.4f}")
    return "\n".join(lines)
