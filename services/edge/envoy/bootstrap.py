"""The bootstrap of an Envoy edge: who it is and where placement is, nothing else.

Everything the edge does (its listener, routes and clusters) comes from placement over delta
ADS (``services/xds``). The bootstrap names the node (``id`` = edge id, ``cluster`` = its
region; ``metadata.listen_host``/``listen_port`` = where placement should make it listen,
``metadata.slow_path_port`` = its co-located Python edge on 127.0.0.1, if it has one;
``metadata.envoy_filters`` = ``module`` when it loads the C dynamic module, ``native.py``),
one static cluster ``placement`` with every placement replica as an endpoint (HTTP/2, as gRPC
needs), and the admin interface on 127.0.0.1 on a port from ``services.ports`` (below the
ephemeral range, so no outgoing connection can hold it). With ``[security]`` TLS
(:class:`EnvoyTls`), the node's certificate files as static secrets (``services/xds/tls.py``:
what placement pushes names them, never carries a key) and mTLS to placement: ADS and the
access log present the edge's certificate, and placement's must chain to the CA and name
the host dialled.
"""

from __future__ import annotations

import ipaddress
import json
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.upstreams.http.v3 import (  # noqa: F401 (registers the "@type")
    http_protocol_options_pb2 as _protocol_options_pb2,
)
from google.protobuf import json_format

from services.xds import tls
from services.xds.native import NODE_KEY
from services.xds.resources import PLACEMENT_CLUSTER  # the listener logs calls to it

_T = "type.googleapis.com/"


@dataclass(frozen=True)
class EnvoyNode:
    edge_id: str
    region: str
    listen_host: str
    listen_port: int
    admin_port: int
    slow_path_port: int = 0  # the co-located Python edge (services.edge.envoy.slowpath); 0: none
    # started able to load the C dynamic module (services/xds/native.py): placement then
    # pushes the module's filters in place of the listener Lua
    module: bool = False


@dataclass(frozen=True)
class EnvoyTls:
    """The node's certificate files (absolute, or relative to Envoy's working directory)."""

    ca_file: str
    cert_file: str
    key_file: str


def _socket(address: str) -> dict[str, Any]:
    host, _, port = address.rpartition(":")
    return {"socket_address": {"address": host, "port_value": int(port)}}


def _resolved(addresses: Sequence[str]) -> bool:
    try:
        for a in addresses:
            ipaddress.ip_address(a.rpartition(":")[0])
    except ValueError:
        return False
    return True


def bootstrap(node: EnvoyNode, placement: Sequence[str], delta: bool = True,
              certs: EnvoyTls | None = None) -> dict[str, Any]:
    """The bootstrap as a dict (Envoy reads it as JSON); checked against the Bootstrap proto.

    ``delta``: delta ADS (the default); False asks for state-of-the-world ADS. ``certs``:
    TLS (the mesh's ``[security]``); None: plaintext."""
    ads = {"ads": {}, "resource_api_version": "V3"}
    config: dict[str, Any] = {
        "node": {"id": node.edge_id, "cluster": node.region,
                 "metadata": {"listen_host": node.listen_host,
                              "listen_port": node.listen_port,
                              **({"slow_path_port": node.slow_path_port}
                                 if node.slow_path_port else {}),
                              **({NODE_KEY: "module"} if node.module else {})}},
        "admin": {"address": _socket(f"127.0.0.1:{node.admin_port}")},
        "dynamic_resources": {
            "ads_config": {"api_type": "DELTA_GRPC" if delta else "GRPC", "transport_api_version": "V3",
                           "set_node_on_first_message_only": True,
                           "grpc_services": [{"envoy_grpc": {
                               "cluster_name": PLACEMENT_CLUSTER}}]},
            "cds_config": ads, "lds_config": ads},
        "static_resources": {"clusters": [{
            "name": PLACEMENT_CLUSTER, "connect_timeout": "1s",
            "type": "STATIC" if _resolved(placement) else "STRICT_DNS",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {
                        "connection_keepalive": {"interval": "5s", "timeout": "5s"}}}}},
            "load_assignment": {"cluster_name": PLACEMENT_CLUSTER, "endpoints": [{
                "lb_endpoints": [{"endpoint": {"address": _socket(a)}} for a in placement]}]},
        }]},
    }
    if certs is not None:
        static = config["static_resources"]
        static["clusters"][0]["transport_socket"] = tls.upstream(
            a.rpartition(":")[0] for a in placement)
        static["secrets"] = tls.static_secrets(certs.ca_file, certs.cert_file, certs.key_file)
    json_format.ParseDict(config, bootstrap_pb2.Bootstrap())  # raises on a misspelt field
    return config


def write_bootstrap(path: pathlib.Path, node: EnvoyNode, placement: Sequence[str],
                    delta: bool = True, certs: EnvoyTls | None = None) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bootstrap(node, placement, delta, certs), indent=2))
    return path
