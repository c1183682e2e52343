"""Backend <-> Consul service: the metadata an agent writes and placement reads back.

Consul service meta is string->string, keys ``[A-Za-z0-9_-]`` up to 128 characters, values up
to 512 characters, 64 pairs at most. Variants are serialized as compact JSON
(``[[logical, variant, quality], ...]``) split over ``variants``, ``variants_1``, ... so that
a backend hosting many variants still fits the value limit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from services.api.switchyard.v1 import fleet_pb2

META_VALUE_MAX = 512
META_PAIRS_MAX = 64
SERVICE_TAG = "switchyard"
PLACEMENT_SHARD_META = "shard"  # a placement replica's shard key (``shards[i]``), issue 15


class MetaError(ValueError):
    """Meta on a Consul service is missing or malformed; the message names the field."""


def backend_meta(backend: fleet_pb2.Backend) -> dict[str, str]:
    """The service meta an agent registers for ``backend``."""
    meta = {
        "region": backend.region,
        "cloud": backend.cloud,
        "accelerator": backend.accelerator,
        "accelerator_count": str(backend.accelerator_count),
        "price_class": backend.price_class,
        "max_concurrency": str(backend.max_concurrency),
    }
    variants = json.dumps([[v.logical_model, v.variant, v.quality] for v in backend.variants],
                          separators=(",", ":"))
    chunks = [variants[i:i + META_VALUE_MAX] for i in range(0, len(variants), META_VALUE_MAX)]
    for i, chunk in enumerate(chunks or ["[]"]):
        meta["variants" if i == 0 else f"variants_{i}"] = chunk
    if len(meta) > META_PAIRS_MAX:
        raise MetaError(f"backend {backend.id!r}: {len(backend.variants)} variants need "
                        f"{len(meta)} meta pairs, Consul allows {META_PAIRS_MAX}")
    return meta


def backend_from_service(service: Mapping[str, Any], node_address: str = "") -> fleet_pb2.Backend:
    """Rebuild the wire ``Backend`` from a health/catalog entry's ``Service`` object.

    An empty service address means the node's address, as Consul documents.
    """
    sid = str(service.get("ID") or "")
    meta: Mapping[str, str] = service.get("Meta") or {}
    try:
        variants_json = "".join(
            meta[k] for k in ["variants", *(f"variants_{i}" for i in range(1, META_PAIRS_MAX))]
            if k in meta)
        variants = [fleet_pb2.VariantRef(logical_model=str(m), variant=str(v), quality=float(q))
                    for m, v, q in json.loads(variants_json)]
        address = service.get("Address") or node_address
        return fleet_pb2.Backend(
            id=sid, endpoint=f"{address}:{int(service['Port'])}", cloud=meta["cloud"],
            region=meta["region"], accelerator=meta["accelerator"],
            accelerator_count=int(meta.get("accelerator_count", "1")),
            price_class=meta.get("price_class", "on-demand"), variants=variants,
            max_concurrency=int(meta.get("max_concurrency", "0")),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise MetaError(f"consul service {sid!r}: bad or missing meta ({exc!r}); "
                        f"meta was {dict(meta)}") from exc
