"""An Envoy edge's slow path: the Python edge router, co-located on a private port.

What compiled config cannot express exactly goes there instead of being served more loosely
(``services/xds/lua.py``: ``ModelStreamInfer``, ``RepositoryIndex``, ``ModelStatistics``,
``ServerMetadata``, and a ``ModelInfer`` carrying ``x-min-quality``, ``x-max-cost-usd``,
``x-allowed-regions``, ``x-fail-fast`` or ``x-routing-profile``). It is an ordinary edge
(``services.edge.main.start_edge``: the same contracts, hints, attempt policy, trailers)
with four differences:

- its id is ``<edge>-slow``: it watches placement and reports its own observations and call
  rates under that id, so placement counts it as one more edge of the region for slot shares
  and Envoy's access-log feedback skips the calls it served (nothing counted twice);
- it listens on 127.0.0.1 at a port of its own (the Envoy node's ``slow_path_port``, which
  is how placement learns where to point the ``slow-path`` cluster);
- it dials backends directly, as the Envoy beside it does (no emulated-WAN relay), so both
  paths of one edge see the same network;
- over TLS, a call's client certificate is the one its Envoy forwards
  (``x-forwarded-client-cert``, believed only from a peer holding the edge's own
  certificate: ``services/security/xfcc.py``), so tenants identified by ``client_san`` are
  admitted as on a Python edge.

Its Prometheus metrics (``switchyard_edge_*``: the slow path's calls) are served on the edge's
``metrics_port``, which Envoy itself does not use (Envoy's own counters are on its admin
port: ``cluster.slow-path.upstream_rq_total`` counts the calls it sent here).
"""

from __future__ import annotations

from services.config import EdgeConfig, MeshConfig
from services.edge.main import RunningEdge, start_edge

SUFFIX = "-slow"


def slow_path_edge(edge: EdgeConfig, port: int = 0) -> EdgeConfig:
    """The co-located Python edge of Envoy edge ``edge``: same region, private address."""
    return edge.model_copy(update={"id": edge.id + SUFFIX, "host": "127.0.0.1", "port": port})


async def start_slow_path(cfg: MeshConfig, edge: EdgeConfig, port: int = 0,
                          placement: list[str] | None = None,
                          metrics_port: int | None = None) -> RunningEdge:
    """Start the slow path of ``edge`` (port 0: any free port; ``RunningEdge.port`` says)."""
    return await start_edge(cfg, slow_path_edge(edge, port), port=port, placement=placement,
                            metrics_port=metrics_port, dial=lambda endpoint: endpoint,
                            forwarded_certs=True)
