"""Traffic made from the image generator's looks (ingest.synthetic), to try `monitor` without a cluster and to
measure it: the look a model was trained on, with seeds it never saw, is traffic without drift; another look is
drifted traffic."""

from __future__ import annotations

import math
import time

from contract import features
from contract.traffic import PREDICT_ORIGIN
from ingest import synthetic
from traffic.records import TrafficRecord
from traffic.writer import TrafficWriter

FRESH_SEED = 1000  # generator seeds from here on: images no span of the demo or the tests holds


def images(look: str, count: int, seed: int = FRESH_SEED, sides: tuple[int, int] = synthetic.DEMO_SIDES) -> list[bytes]:
    """`count` images of `look`, cats and dogs in turn."""
    return [synthetic.render_image(features.LABEL_NAMES[index % 2], index // 2, seed, sides, look)
            for index in range(count)]


def write_traffic(traffic_root: str, jpegs: list[bytes], version: int, start_ms: int | None = None,
                  batch_size: int = 1000) -> list[int]:
    """Publishes `jpegs` as traffic spans answered by `version` (score unknown: NaN), one millisecond apart;
    returns the spans written."""
    start_ms = int(time.time() * 1000) if start_ms is None else start_ms
    writer = TrafficWriter(traffic_root, batch_size=batch_size, max_seconds=3600)
    for index, jpeg in enumerate(jpegs):
        writer.add(TrafficRecord(jpeg, math.nan, version, start_ms + index, f"request-{index}", PREDICT_ORIGIN))
    writer.flush()
    return writer.spans
