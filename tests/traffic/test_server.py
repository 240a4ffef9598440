"""The sink's HTTP server on a real uvicorn server in a thread of this process (the configuration `traffic-sink`
serves with): bodies, headers and connections bounded, faults answered in one line.
"""

import contextlib
import logging
import socket
import statistics
import time

import httpx
import pytest

from tests.traffic.kserve import free_port, kserve_headers, make_sink, request_body
from traffic import pairing, reasons
from traffic import server as sink_server


def _raw_event(port: int, event_id: str, size: int, sent: int) -> socket.socket:
    """A connection that has sent the headers of a `size`-byte request event and `sent` bytes of its body."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=20)
    head = "".join(f"{k}: {v}\r\n" for k, v in kserve_headers("request", event_id).items())
    connection.sendall(f"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n{head}\r\n".encode())
    connection.sendall(b" " * sent)
    return connection


@contextlib.contextmanager
def _served(sink, port):
    """The sink's app on a bare uvicorn server in a thread of this process, until the block ends."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(sink_server.make_app(sink), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        yield
    finally:
        server.should_exit = True
        thread.join(30)


def test_bodies_arriving_at_once_are_bounded_across_connections_and_a_slow_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(sink_server, "BODY_SECONDS", 3.0)
    taken = []  # each body's share of the bound, as the server takes it: read, not changed
    take = sink_server._take

    def seen(arriving, size, mine):
        take(arriving, size, mine)
        taken.append(size)

    monkeypatch.setattr(sink_server, "_take", seen)
    sink = make_sink(tmp_path, max_event_mb=1)
    port = free_port()
    with _served(sink, port):
        # Each sender holds almost a whole event's body: one more sender than ARRIVING_EVENTS is refused at once.
        slow = [_raw_event(port, f"slow-{i}", 2**20, 2**20 - 1) for i in range(sink_server.ARRIVING_EVENTS)]
        # Until the server holds them all (a fixed pause was too short on a loaded machine: the one more was let
        # in and refused for its size instead).
        deadline = time.monotonic() + 20
        while len(taken) < sink_server.ARRIVING_EVENTS:
            assert time.monotonic() < deadline, taken
            time.sleep(0.02)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            busy = client.post("/", headers=kserve_headers("request", "one more"), content=request_body([b"x"] * 9000))
            assert busy.status_code == 503 and busy.json()["refused"] == reasons.BUSY
            answers = [connection.recv(200) for connection in slow]  # then each slow one, refused
            assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers
            assert client.post("/", headers=kserve_headers("request", "after"),
                               content=request_body([b"x"])).status_code == 200
    assert sink.refused == {reasons.BUSY: 1, reasons.TOO_SLOW: sink_server.ARRIVING_EVENTS}


def test_a_burst_of_large_events_lets_in_those_within_the_bound_whole_and_refuses_the_rest_before_their_body(
        tmp_path):
    sink = make_sink(tmp_path, max_event_mb=1)
    port = free_port()
    with _served(sink, port):
        # Six events of 0.9 MiB each start at once, each body half sent: four fit the bound of four whole events'
        # bytes (ARRIVING_EVENTS of --max-event-mb) and must all be taken; the fifth and sixth are refused before
        # any more of their bodies is read.
        bodies = {f"big-{i}": request_body([bytes([i]) * 700_000]) for i in range(6)}
        connections = {}
        for event_id, body in bodies.items():
            connection = socket.create_connection(("127.0.0.1", port), timeout=20)
            head = "".join(f"{k}: {v}\r\n" for k, v in kserve_headers("request", event_id).items())
            connection.sendall(f"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode()
                               + body[:len(body) // 2])
            connections[event_id] = connection
            time.sleep(0.2)
        refused = {event_id: connections[event_id].recv(300) for event_id in ("big-4", "big-5")}
        assert all(answer.startswith(b"HTTP/1.1 503") for answer in refused.values()), refused
        for event_id in ("big-0", "big-1", "big-2", "big-3"):
            connections[event_id].sendall(bodies[event_id][len(bodies[event_id]) // 2:])
        answers = [connections[event_id].recv(300) for event_id in ("big-0", "big-1", "big-2", "big-3")]
        assert all(answer.startswith(b"HTTP/1.1 200") for answer in answers), answers
        for connection in connections.values():
            connection.close()
    assert sink.refused == {reasons.BUSY: 2}


@pytest.fixture
def served_sink(tmp_path):
    """A sink on a real uvicorn server (the configuration `traffic-sink` serves with) in a thread of this
    process, and a client of it."""
    import threading

    import uvicorn

    holder = {}

    def start(**settings):
        sink = make_sink(tmp_path, **settings)
        port = free_port()
        server = uvicorn.Server(sink_server.server_config(sink, port))
        thread = threading.Thread(target=server.run)
        thread.start()
        holder.update(server=server, thread=thread)
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        return sink, port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    yield start
    if holder:
        holder["server"].should_exit = True
        holder["thread"].join(30)


def test_healthz_answers_while_a_large_event_is_parsed(served_sink):
    import concurrent.futures

    sink, _, client = served_sink(max_instances=10**6, max_event_mb=16)
    body = request_body([b"ab"] * 150_000)  # some 3 MB: seconds of JSON and base64 for one event
    with concurrent.futures.ThreadPoolExecutor(1) as pool, httpx.Client(base_url=client.base_url,
                                                                         timeout=60) as probe:
        big = pool.submit(client.post, "/", headers=kserve_headers("request", "big"), content=body)
        while sink.received == 0:  # the body is whole and its parsing begun
            time.sleep(0.01)
        answered = []
        while not big.done():
            started = time.monotonic()
            assert probe.get("/healthz").json() == {"ok": True}
            answered.append((time.monotonic() - started, big.done()))
        assert big.result().json() == {"id": "big", "images": 150_000, "waiting_for": "response"}
    in_flight = [seconds for seconds, done in answered if not done]
    assert in_flight, "no probe was answered while the event was parsed"
    # the median: one probe held up by a pause of this process's own (a collection, another test's processes on
    # the cores) says nothing of the loop; a loop blocked by the parse would hold every probe sent during it
    assert statistics.median(in_flight) < 1.0, answered


def test_an_unforeseen_fault_is_answered_500_in_one_line_counted_and_the_sink_goes_on(served_sink, caplog,
                                                                                        monkeypatch):
    sink, _, client = served_sink()
    taking = sink.take

    def faulty(parsed):
        if parsed.event.id == "boom":
            raise KeyError("a fault no test foresaw")
        return taking(parsed)

    monkeypatch.setattr(sink, "take", faulty)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            answer = client.post("/", headers=kserve_headers("request", "boom"), content=request_body([b"a"]))
            assert answer.status_code == 500
            assert answer.json() == {"refused": reasons.INTERNAL, "detail": "KeyError: 'a fault no test foresaw'"}
        assert client.post("/", headers=kserve_headers("request", "fine"), content=request_body([b"a"])).json() == \
            {"id": "fine", "images": 1, "waiting_for": "response"}
    assert sink.stats()["refused"] == {reasons.INTERNAL: 3}
    said = [r.getMessage() for r in caplog.records if reasons.INTERNAL in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], said  # rate-limited: once per reason every 10 s
    assert not any(r.exc_info for r in caplog.records) and "Traceback" not in caplog.text


def _padded_request(port: int, padding: int) -> bytes:
    """The answer to a request event whose headers hold `padding` bytes more, sent in two parts: h11 holds its
    limit against headers still incomplete. b"reset" when the sink closed the connection while they were sent."""
    head = "".join(f"{k}: {v}\r\n" for k, v in kserve_headers("request", f"padded-{padding}").items()).encode()
    body = request_body([b"a"])
    message = (b"POST / HTTP/1.1\r\nhost: x\r\n" + head + b"x-padding: " + b"p" * padding
               + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
        try:
            connection.sendall(message[:padding])
            time.sleep(0.3)
            connection.sendall(message[padding:])
            return connection.recv(200)
        except ConnectionError:
            return b"reset"


def test_a_request_whose_headers_are_above_the_limit_is_answered_400_and_the_sink_serves_on(served_sink):
    """uvicorn answers it (h11's max_incomplete_event_size): said in uvicorn's own log line, not in /stats."""
    sink, port, client = served_sink()
    assert _padded_request(port, 20_000).startswith(b"HTTP/1.1 200"), "above h11's own 16 KiB, below the sink's"
    answer = _padded_request(port, sink_server.MAX_HEADER_BYTES + 1000)
    assert answer.startswith(b"HTTP/1.1 400") or answer == b"reset", answer
    assert client.get("/healthz").json() == {"ok": True}
    assert client.get("/stats").json()["refused"] == {}
    assert client.post("/", headers=kserve_headers("request", "after"),
                       content=request_body([b"a"])).json()["waiting_for"] == "response"


def _until_closed(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(4096):
        received += chunk
    return received


def test_headers_sent_slowly_are_not_cut_off_and_a_connection_idle_after_its_answer_is_closed(served_sink):
    """uvicorn has no timer on a request's line and headers (the proxy in front cuts slow clients off);
    --header-seconds is its keep-alive timeout, which closes a connection idle after an answer."""
    sink, port, client = served_sink(header_seconds=0.5)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
        for byte in b"POST / HTTP/1.1\r\nhost: x\r\nx-slow: " + b"s" * 40:  # one byte every 50 ms: 3 s
            slow.sendall(bytes([byte]))
            time.sleep(0.05)
        for connection in (slow, silent):
            connection.settimeout(1)
            with pytest.raises(TimeoutError):
                connection.recv(200)  # still open, well past --header-seconds
            connection.settimeout(10)
        # timed from before the request ends: the keep-alive timer starts once the answer is sent, so the close
        # cannot come sooner than --header-seconds after this, however late this thread runs again
        started = time.monotonic()
        slow.sendall(b"\r\ncontent-length: 0\r\n\r\n")
        answer = slow.recv(12)
        _until_closed(slow)
        assert answer == b"HTTP/1.1 400", "answered by the sink once whole: no CloudEvent"
        # and well before uvicorn's own 5-second keep-alive, which this setting replaces
        assert 0.45 < time.monotonic() - started < 4, "idle after its answer: closed after --header-seconds"
    assert client.get("/healthz").json() == {"ok": True}
    assert client.get("/stats").json()["refused"] == {reasons.NOT_A_CLOUDEVENT: 1}


def test_a_request_on_a_connection_beyond_the_limit_is_answered_503(served_sink):
    """uvicorn's limit_concurrency: a request is answered 503 once its headers are whole (a connection that sends
    none is not refused); said in uvicorn's own log line, not in /stats."""
    sink, port, client = served_sink(max_connections=3)
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            assert extra.recv(200).startswith(b"HTTP/1.1 503")
        held[0].settimeout(0.5)
        with pytest.raises(TimeoutError):
            held[0].recv(200)  # open, silent, not refused
    finally:
        for connection in held:
            connection.close()
    # until the server has seen the closes: before that, uvicorn's own 503 (plain text) for the one connection over
    deadline = time.monotonic() + 30
    while (health := client.get("/healthz")).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health.json() == {"ok": True}
    assert client.get("/stats").json()["refused"] == {}


def test_headers_that_end_in_a_later_read_pass_the_limit_by_up_to_that_read(served_sink):
    """h11 holds its limit against incomplete headers only: 60 KiB sent, then 60 KB more that end them in one read,
    are taken whole (the sink then refuses the event: no CloudEvent)."""
    sink, port, client = served_sink()
    head = b"POST / HTTP/1.1\r\nhost: x\r\nx-padding: " + b"p" * (sink_server.MAX_HEADER_BYTES - 4096)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
        try:
            connection.sendall(head)
            time.sleep(0.3)
            connection.sendall(b"q" * 60_000 + b"\r\ncontent-length: 0\r\n\r\n")
            answer = connection.recv(200)
        except ConnectionError:
            answer = b"reset"
    assert answer.startswith(b"HTTP/1.1 400") or answer == b"reset", answer
    assert client.get("/stats").json()["refused"] == {reasons.NOT_A_CLOUDEVENT: 1}


def test_a_client_gone_mid_body_is_counted_once_in_one_line_without_a_traceback(served_sink, caplog, monkeypatch):
    sink, port, client = served_sink()
    # uvicorn's loggers do not propagate (its own configuration), nor may the sink's after an earlier command's
    # set-up: the test's handler on both.
    for name in ("uvicorn.error", pairing.logger.name):
        monkeypatch.setattr(logging.getLogger(name), "handlers", [*logging.getLogger(name).handlers, caplog.handler])
    caplog.set_level(logging.WARNING, logger=pairing.logger.name)
    head = "".join(f"{k}: {v}\r\n" for k, v in kserve_headers("request", "gone").items()).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"POST / HTTP/1.1\r\nhost: x\r\n" + head + b"content-length: 1000\r\n\r\n{\"instances")
    chunked = kserve_headers("request", "chunked") | {"transfer-encoding": "chunked"}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"POST / HTTP/1.1\r\nhost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in chunked.items())
                           .encode() + b"\r\nzz\r\nabc\r\n0\r\n\r\n")  # a chunk size that is no number
        assert connection.recv(200).startswith(b"HTTP/1.1 400")
    deadline = time.monotonic() + 10
    while sum(client.get("/stats").json()["refused"].values()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    # uvicorn answers the chunk that is no HTTP 400 and closes: the sink sees that body cut short
    assert client.get("/stats").json()["refused"] == {reasons.CLIENT_GONE: 2}
    assert "Traceback" not in caplog.text and "Exception in ASGI application" not in caplog.text
    assert "connection closed before the body was whole" in caplog.text


def test_failed_accepts_while_out_of_descriptors_are_one_line_in_ten_seconds_without_a_traceback():
    fault = OSError(24, "Too many open files")
    lines = logging.getLogger("asyncio-under-test")
    kept = []
    handler = logging.Handler()
    handler.emit = kept.append
    lines.addHandler(handler)
    lines.propagate = False
    lines.addFilter(sink_server._AcceptFaults(every_seconds=10))
    for _ in range(5000):  # what asyncio logs for each accept() that fails, as it does
        try:
            raise fault
        except OSError:
            lines.error("socket.accept() out of system resource\nsocket: %r", "<socket>", exc_info=True)
    lines.error("something else")
    assert [record.getMessage() for record in kept] == [
        "traffic sink: 1 accept(s) failed since the last such line ([Errno 24] Too many open files): too many "
        "connections open; the others wait in the listening queue", "something else"]
    assert kept[0].exc_info is None
