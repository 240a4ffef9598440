"""`monitor`: served traffic against the served model's own data (monitoring.monitor)."""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
import uuid

from cli import flags, history
from cli.flags import SettingsError
from contract import errors

_DURATION = re.compile(r"([0-9]+)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_ms(text: str, now: float | None = None) -> int:
    """--since: a duration back from now (30m, 6h, 2d) or a UTC time (2026-11-24T08:00:00Z), as Unix ms; refused
    before the earliest time a traffic record can carry."""
    from contract.traffic import EARLIEST_TIME_MS, time_text

    match = _DURATION.fullmatch(text.strip())
    try:
        if match:
            now = time.time() if now is None else now
            moment_ms = int((now - int(match.group(1)) * _SECONDS[match.group(2)]) * 1000)
        else:
            moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.timezone.utc)
            moment_ms = int(moment.timestamp() * 1000)
    except (ValueError, OverflowError):  # not a time, or one no clock reaches
        raise argparse.ArgumentTypeError(f"expected a duration (30m, 6h, 2d) or a UTC time "
                                         f"(2026-11-24T08:00:00Z), got {text!r}") from None
    if moment_ms > (time.time() if now is None else now) * 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is in the future: no traffic is there yet to check")
    if moment_ms < EARLIEST_TIME_MS:
        raise argparse.ArgumentTypeError(f"{text!r} reaches back before {time_text(EARLIEST_TIME_MS)}, the earliest "
                                         "time a traffic record can carry")
    return moment_ms


def _rate(text: str) -> float:
    from monitoring.settings import MIN_FALSE_ALARM_RATE, PERMUTATIONS, TESTS

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1 (e.g. 0.05), got {text!r}")
    if value <= MIN_FALSE_ALARM_RATE:
        raise argparse.ArgumentTypeError(
            f"must be above {MIN_FALSE_ALARM_RATE:g}, got {text!r}: it is shared by {TESTS} tests, and the "
            f"features' test ({PERMUTATIONS} permutations) gives no p-value below {1 / (PERMUTATIONS + 1):g}, so at "
            "a rate that low it could never report drift")
    return value


def _monitor_flags(parser: argparse.ArgumentParser) -> None:
    from monitoring.settings import MIN_REFERENCE, MonitorSettings

    defaults = MonitorSettings()
    history.add_root_flags(parser, "The pipeline's root: its served model, its spans, and the traffic the sink or "
                                   "`predict --record` wrote under <output-dir>/traffic.")
    parser.add_argument("--window", type=flags.count(1), default=defaults.window,
                        help=f"Check the newest N images of traffic. Default: {defaults.window}.")
    parser.add_argument("--since", type=since_ms, metavar="WHEN",
                        help="Only traffic at or after WHEN: a duration back from now (30m, 6h, 2d) or a UTC time "
                             "(2026-11-24T08:00:00Z).")
    parser.add_argument("--false-alarm-rate", type=_rate, default=defaults.false_alarm_rate,
                        help="The chance of reporting drift on a window with none, shared by the tests "
                             f"(Bonferroni). Default: {defaults.false_alarm_rate}.")
    parser.add_argument("--sample", type=flags.count(MIN_REFERENCE), default=defaults.sample,
                        help="Images of the window, and of the reference, the model measures (colour, score, "
                             f"pooled features); sizes are read from every image. Default: {defaults.sample}.")
    parser.add_argument("--min-window", type=flags.count(2), default=defaults.min_window,
                        help="The images a check needs at least: with fewer, there is nothing to check yet (exit "
                             f"0, nothing written). Default: {defaults.min_window}.")
    parser.add_argument("--no-queue", action="store_true",
                        help="On drift, do not export the window's images as a labeling queue.")
    flags.add_json(parser, "Print the result as JSON instead of one line.")


def command_monitor(args: argparse.Namespace) -> int:
    """Compare a window of served traffic with the served model's data; queue drifted images for labels.

    Tests the window's image sizes, brightness and colour, the served model's scores and its pooled features
    against the held-out images of the spans the served version was trained on, with the stated false-alarm
    rate shared among the tests. Writes a report under <output-dir>/monitoring/, records the check in ML
    Metadata, and on drift exports the window's images to <output-dir>/labeling/queue-N/ for a person to sort
    into cat/ and dog/ (then `ingest --data-dir` that folder). A deployment's root (--root, gs:// or a path on
    its volume) is checked the same way with its store (--metadata-grpc or --metadata-sqlite); the monitoring
    package (`compile --monitor-package`) runs this on the cluster. Prints the verdict in one line (--json: the
    result). Exit 0 whatever the verdict, and when there is nothing to check yet (the window holds fewer than
    --min-window images: a served model's first hours; no model pushed yet; nothing run yet at a root its
    schedule's line made); 2 when refused (a pushed model no longer served, too few images that can be decoded,
    not a root, a place of the root that is a symbolic link); 3 while a run, an ingest, a rollback or another
    check holds the root.
    """
    from contract import startup
    from contract.layout import RunLayout
    from monitoring.settings import MonitorSettings
    from orchestration.root import marker, run_lock, store_health

    if args.window < args.min_window:  # else every check would find "nothing to check yet", for ever
        raise SettingsError(f"--window {args.window} is below --min-window {args.min_window}: no window could ever "
                            "be checked; give a --window of at least --min-window")
    store = None
    if args.root is not None or args.metadata_grpc or args.metadata_sqlite:
        root, store = history.history_store(args)
        flag = "--root"
    else:
        root, flag = args.output_dir.resolve(), "--output-dir"
    if marker.inspect(root).state == marker.NEW:
        if store is None and _only_checks_logged(RunLayout(root).schedule_log):  # the schedule's, before its run
            return _nothing_yet(args, f"nothing to check yet: nothing has run at {root} yet (its schedule's log "
                                      "is there, and no run in it): a check needs the model a run pushes")
        raise SettingsError(f"{flag} {root} is not a pipeline root (nothing was ever run there): no model "
                            "to monitor; nothing was checked")
    settings = MonitorSettings(window=args.window, since_ms=args.since,
                                       false_alarm_rate=args.false_alarm_rate, sample=args.sample,
                                       min_window=args.min_window, queue=not args.no_queue)
    # The root's lease, as a run's: a check's write to the SQLite store beside a run's fails one of them
    # ("database is locked"), a rollback would change the served model under it, and two checks would queue
    # the same images twice. A check while one of those holds the root exits at once (BUSY).
    from contract import interrupts

    # SIGTERM (a scheduler's stop) as a Ctrl-C: a check stopped after publishing its queue takes the queue with it
    with interrupts.TermAsCtrlC(), \
            run_lock.exclusive_run(root, f"monitor-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"):
        if store is None:  # the root's own SQLite store, locked by another process: busy, before any work
            store_health.check(RunLayout(root).metadata_path)
        with startup.loading_libraries():  # TensorFlow once the root is this check's: a busy root is said at once
            from monitoring import monitor
        from traffic.records import TrafficDataError

        _say_spans_not_read(RunLayout(root).traffic_root)
        try:
            result = monitor.check(RunLayout(root), settings, store)
        except TrafficDataError as damaged:
            traffic = str(RunLayout(root).traffic_root)
            if f"{traffic}/span-" not in str(damaged):
                raise
            # every later check would stop on the same span: say how to check the rest
            raise TrafficDataError(f"{damaged}; to check the rest of the traffic, move that span's folder out of "
                                   f"{traffic} (it is then never read)") from None
        except monitor.NothingToCheckYet as nothing:
            return _nothing_yet(args, str(nothing))
    print(json.dumps(result.result, indent=2) if args.json else result.line, flush=True)
    return errors.OK


def _only_checks_logged(log) -> bool:
    """Whether `log` is a schedule's log (local_schedule's entries open with `=== <command> <date> ===`) that holds
    no run yet: the folder its line made before the first nightly run. A log with a run in it, in a folder that is
    no root, is a root moved or gone (an unmounted disk): refused, as any folder that is no root."""
    try:
        with open(log, "rb") as lines:
            entries = [line for line in lines if line.startswith(b"=== ")]
    except OSError:  # a folder, a broken link: no log of a schedule's
        return False
    return bool(entries) and not any(entry.startswith(b"=== run ") for entry in entries)


def _nothing_yet(args: argparse.Namespace, line: str) -> int:
    print(json.dumps({"checked": False, "drift": None, "verdict": line}, indent=2) if args.json else line, flush=True)
    return errors.OK


def _say_spans_not_read(traffic_root) -> None:
    """A warning for each traffic span the window passes over (a link in it, files its report names missing, no
    report yet: cut short, or being published by a sink right now), so that no recorded traffic drops out of a
    check without a word."""
    from contract.errors import shown_name
    from traffic import spans
    from traffic.records import TrafficDataError

    root = str(traffic_root)
    try:
        numbered = spans.numbered(root)
    except OSError:  # the window's own read says what is wrong with the folder
        return
    for span in numbered:
        try:
            why = spans.incomplete_reason(root, span)
        except (TrafficDataError, OSError):  # a damaged report: the window's read stops on it, naming it
            continue
        if why:
            print(f"warning: traffic {shown_name(spans.span_dir(root, span))} is not read: {why}", file=sys.stderr)


COMMANDS = (flags.Command.of("monitor", _monitor_flags, command_monitor),)
