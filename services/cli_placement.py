"""How the operator commands reach a mesh: its config, read once, and a stub of placement.

``placement_stub`` also records on ``args`` the address it asks and how a connection error names
it (``rpc_target``), which ``services.cli.main`` puts in the message it prints.
"""

from __future__ import annotations

import argparse
import os

import grpc

from services.config import MeshConfig, load_config


def load_mesh(args: argparse.Namespace) -> MeshConfig:
    """The config of ``--config``, with the environment's overrides."""
    return load_config(args.config, env=dict(os.environ))


def placement_stub(cfg: MeshConfig, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """A ``Placement`` stub for ``--placement`` or, by default, ``[placement]``'s host:port."""
    from services.api.switchyard.v1 import placement_pb2_grpc

    address = args.placement or f"{cfg.placement.host}:{cfg.placement.port}"
    args.placement_address = address
    args.rpc_target = f"placement at {address}"  # named in connection errors
    return placement_pb2_grpc.PlacementStub(grpc.insecure_channel(address))
