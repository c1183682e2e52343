"""Triton's ``ModelStatistics`` for a logical model: the sum over its serving deployments.

The edge asks each (backend, variant) that serves the model and adds the answers up under
the logical name, as a caller of the edge sees one model. Counts and durations add; the last
inference is the latest; memory usage is listed per deployment.
"""

from __future__ import annotations

from google.protobuf.message import Message
from tritonclient.grpc import service_pb2


def _add_durations(dst: Message, src: Message) -> None:
    """Add every ``StatisticDuration`` field of ``src`` (count, ns) into ``dst``."""
    for field in src.DESCRIPTOR.fields:
        if field.message_type is None or field.message_type.name != "StatisticDuration":
            continue
        d, s = getattr(dst, field.name), getattr(src, field.name)
        d.count += s.count
        d.ns += s.ns


def add(total: service_pb2.ModelStatistics, s: service_pb2.ModelStatistics) -> None:
    """Add one deployment's statistics ``s`` into ``total`` (names are left alone)."""
    total.last_inference = max(total.last_inference, s.last_inference)
    total.inference_count += s.inference_count
    total.execution_count += s.execution_count
    _add_durations(total.inference_stats, s.inference_stats)
    by_size = {b.batch_size: b for b in total.batch_stats}
    for b in s.batch_stats:
        mine = by_size.get(b.batch_size)
        if mine is None:
            mine = by_size[b.batch_size] = total.batch_stats.add(batch_size=b.batch_size)
        _add_durations(mine, b)
    for key, r in s.response_stats.items():
        _add_durations(total.response_stats[key], r)
    total.memory_usage.extend(s.memory_usage)
