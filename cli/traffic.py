"""`traffic-sink`: recording what the served model is asked, from KServe's inference logger."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from cli import flags
from contract import errors, layout
from contract.errors import CommandError


def _sink_flags(parser: argparse.ArgumentParser) -> None:
    from traffic.settings import SinkSettings

    flags.add_root(parser, "The pipeline root (a local path, a path on the PVC, or gs://): spans are written to "
                           "<root>/traffic, the served version read from <root>/serving_model.", required=True)
    parser.add_argument("--port", required=True, type=flags.count(1), help="The port to listen on.")
    parser.add_argument("--health-port", type=flags.count(1),
                        help="Also answer GET /healthz on this port, for Kubernetes' probes: a flood of the events' "
                             "port (beyond --max-connections it answers 503) cannot reach it. Default: /healthz on "
                             "--port only.")
    flags.add_settings_flags(parser, SinkSettings)


def command_traffic_sink(args: argparse.Namespace) -> int:
    """Record the served model's traffic: KServe's inference logger events into traffic spans.

    Receives the CloudEvents KServe's logger sends for each request and response (spec.predictor.logger in the
    manifest `compile` writes), matches them by id and appends each request's images with the model's score,
    the served version and the time to <root>/traffic/span-N, a span per batch. Malformed events are refused
    with the reason (HTTP 4xx) and counted; counts at /stats, health at /healthz. SIGTERM or Ctrl-C publishes
    the open batch and stops. Refuses a folder that is not a root of this pipeline, and a root another sink records
    into.
    """
    from orchestration.root import marker, run_lock
    from traffic.settings import SinkSettings

    for flag, port in (("--port", args.port), ("--health-port", args.health_port)):
        if port is not None and port > 65535:
            raise CommandError(f"{flag} {port}: a TCP port is at most 65535")
    if args.health_port == args.port:
        raise CommandError(f"--health-port {args.port} is --port's: the probes need a port of their own")
    settings = flags.settings(args, SinkSettings)
    root = args.root if "://" in args.root else os.path.abspath(args.root)
    try:
        found = marker.inspect(root)  # a folder of the user's, named, nothing written
    except marker.NotARootError as error:  # its advice is a run's (a new folder): the sink needs a root that ran
        raise marker.NotARootError(error.finding, "--root is the root of a pipeline that has run (where `run` pushed "
                                   "the model the server serves)") from None
    if found.state == marker.NEW:
        raise CommandError(f"{root} is not a root of this pipeline yet (no {layout.ROOT_MARKER}): run the "
                           "pipeline (or ingest) there first; the sink records beside the model it serves")
    linked = run_lock.linked_parts(root)  # the sink writes and removes under traffic/, reads serving_model/
    if linked:
        raise run_lock.LinkedPartError(f"{root} cannot be used: {'; '.join(linked)}; make it a folder of the root")
    from contract import startup

    with startup.loading_libraries():
        from traffic import server  # TensorFlow: after the checks, which a refusal needs alone

    _log_to_stderr()
    sink = server.start(root, settings)
    print(f"traffic sink: recording into {sink.writer.traffic_root} (batches of {settings.batch_size} images or "
          f"{settings.batch_seconds:g} s, sample rate {settings.sample_rate:g}); starting on "
          f"http://{settings.host}:{args.port}/ (counts at /stats"
          + (f"; /healthz on port {args.health_port})" if args.health_port else ")"), flush=True)
    refusal = _LastError()  # uvicorn logs why it cannot listen, then exits: the command's one line says it too
    try:
        server.serve(sink, args.port, args.health_port, refusal)
    except SystemExit:  # uvicorn exits when it cannot listen; it has logged why
        ports = f"{args.port} or {args.health_port}" if args.health_port else str(args.port)
        why = f": {refusal.message}" if refusal.message else " (the lines above say why)"
        raise errors.RunFailedError(f"the traffic sink could not listen on {settings.host} port {ports}{why}") from None
    print(f"traffic sink: stopped; {sink.writer.recorded} images recorded in {len(sink.writer.spans)} span(s), "
          f"refused {dict(sink.refused)}, lost {dict(sink.writer.lost)}", flush=True)
    return errors.OK


class _LastError(logging.Handler):
    """Keeps the message of the last error a logger logged."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.message = (record.getMessage().strip().splitlines() or [""])[0] or None


def _log_to_stderr() -> None:
    """The sink's lines (refusals, losses, start and stop) on stderr, whatever the quiet default is."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log = logging.getLogger("traffic")  # the package's: the sink's and its writer's lines
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    log.propagate = False


COMMANDS = (flags.Command.of("traffic-sink", _sink_flags, command_traffic_sink),)
