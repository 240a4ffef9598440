"""Traffic records as the tests write them."""

from contract.traffic import KSERVE_ORIGIN
from traffic.records import TrafficRecord

BUCKET_ROOT = "gs://bucket/pipeline/traffic"


def make_record(i: int, score: float = 0.5, version: int = 3, request: str | None = None) -> TrafficRecord:
    return TrafficRecord(image=f"image-{i}".encode(), score=score, version=version, time_ms=1_000 + i,
                         request_id=request or f"req-{i}", origin=KSERVE_ORIGIN)
