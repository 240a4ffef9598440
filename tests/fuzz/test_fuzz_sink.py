"""The traffic sink over random CloudEvents, in both of KServe's modes (binary: ce- headers; structured: one JSON
document): ids and other attributes of any code point (lone surrogates included), times of any range and
offset, bodies of any shape and numbers of any size. Every event is taken (its answer renders as Starlette
sends it) or refused with a 4xx and a reason the sink names; the counts add up; nothing else escapes."""

import base64
import datetime
import json
import logging

from hypothesis import event, given, settings
from hypothesis import strategies as st
from starlette.responses import JSONResponse

from tests.fuzz.conftest import examples
from traffic import pairing, reasons
from traffic.settings import SinkSettings

REASONS = {value for name, value in vars(reasons).items() if name.isupper() and isinstance(value, str)}
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)  # surrogates too
NUMBERS = st.one_of(st.integers(-10**30, 10**30), st.floats(), st.booleans(), st.none(), ANY_TEXT)
OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: datetime.timezone(datetime.timedelta(minutes=m)))
TIMES = st.one_of(
    st.datetimes(min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30),
                 timezones=OFFSETS).map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1970-01-01T00:00:00Z", "", "now",
                     "2026-11-24T10:00:00.123456789Z", "2026-13-01T00:00:00Z"]),
    ANY_TEXT)


def mostly(usual, hostile):
    """`usual` four times in five: an event must get past its first checks for the later ones to be tried."""
    return st.integers(0, 4).flatmap(lambda n: hostile if n == 4 else usual)


B64 = st.binary(max_size=8).map(lambda b: {"b64": base64.b64encode(b).decode()})
IMAGES = mostly(B64, st.one_of(B64.map(lambda image: {"image_bytes": image}), st.fixed_dictionaries({"b64": ANY_TEXT}),
                               NUMBERS))
ANSWERS = mostly(st.fixed_dictionaries({"dog_probability": st.floats(0, 1), "valid": st.booleans()}),
                 st.one_of(NUMBERS, st.fixed_dictionaries({"dog_probability": NUMBERS, "valid": NUMBERS}),
                           st.lists(NUMBERS, max_size=2)))
REQUESTS = mostly(st.fixed_dictionaries({"instances": st.lists(IMAGES, min_size=1, max_size=4)}), st.one_of(
    st.fixed_dictionaries({"instances": st.lists(IMAGES, max_size=4)}),
    st.fixed_dictionaries({"inputs": st.one_of(st.lists(IMAGES, max_size=4),
                                               st.fixed_dictionaries({"image_bytes": st.lists(IMAGES, max_size=4)}))},
                          optional={"signature_name": ANY_TEXT})))
RESPONSES = mostly(st.fixed_dictionaries({"predictions": st.lists(ANSWERS, min_size=1, max_size=4)},
                                         optional={"model_version": NUMBERS}), st.one_of(
    st.fixed_dictionaries({"predictions": st.lists(ANSWERS, max_size=4)}),
    st.fixed_dictionaries({"outputs": st.one_of(st.lists(ANSWERS, max_size=4), st.fixed_dictionaries(
        {"dog_probability": st.lists(NUMBERS, max_size=4)}, optional={"valid": st.lists(NUMBERS, max_size=4)}))})))
OTHER_BODIES = st.one_of(st.dictionaries(ANY_TEXT, NUMBERS, max_size=3), NUMBERS)
KINDS = st.sampled_from(["request", "response"])
ATTRIBUTES = st.fixed_dictionaries(
    {"specversion": mostly(st.just("1.0"), ANY_TEXT), "id": mostly(st.sampled_from(["a", "b"]), ANY_TEXT),
     "source": mostly(st.just("http://p/"), ANY_TEXT), "time": mostly(st.just("2026-11-24T10:00:00Z"), TIMES)})


def _as_header(text: str) -> str:
    """A header's value as the server hands it on: the bytes on the wire read as Latin-1."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


@st.composite
def events(draw):
    """(headers, body) of one event, in binary or structured mode, with attributes left out at random."""
    kind = draw(KINDS)
    attributes = {"type": draw(mostly(st.just(f"org.kubeflow.serving.inference.{kind}"), ANY_TEXT)),
                  **draw(ATTRIBUTES)}
    attributes = {name: value for name, value in attributes.items() if draw(st.integers(0, 29)) < 29}
    data = draw(mostly(REQUESTS if kind == "request" else RESPONSES, OTHER_BODIES))
    if draw(st.booleans()):
        headers = {f"ce-{name}": _as_header(str(value)) for name, value in attributes.items()}
        headers["content-type"] = "application/json"
        return headers, json.dumps(data).encode("utf-8", "surrogatepass")
    document = {**attributes, "data": data}
    return {"content-type": "application/cloudevents+json"}, json.dumps(document).encode("utf-8", "surrogatepass")


@settings(max_examples=examples(300))
@given(st.lists(events(), min_size=1, max_size=4))
def test_every_event_is_taken_or_refused_with_a_reason_and_the_counts_add_up(tmp_path_factory, sequence):
    sink = pairing.TrafficSink(str(tmp_path_factory.mktemp("traffic")), SinkSettings(batch_size=2), lambda: 3)
    logged = _Logged()
    logging.getLogger().addHandler(logged)
    try:
        _send(sink, sequence)
    finally:
        logging.getLogger().removeHandler(logged)
    assert not [r for r in logged.records if r.exc_info or "Traceback" in r.getMessage()], "a traceback was logged"


class _Logged(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _send(sink, sequence):
    answered = 0
    for headers, body in sequence:
        try:
            answer = sink.receive(headers, body)
        except reasons.Refused as refusal:
            assert 400 <= refusal.status < 500 and refusal.reason in REASONS, refusal
            JSONResponse({"refused": refusal.reason, "detail": refusal.detail}, status_code=refusal.status)
            event(f"refused: {refusal.reason}")
        else:
            JSONResponse(answer)  # renders as the server sends it: UTF-8, no NaN
            answered += 1
            event("taken")
    assert sink.received == answered + sum(sink.refused.values())
    sink.close()
