"""Shared fixtures for integration tests (real servers on 127.0.0.1)."""

from tests.fixtures_backends import triton_backend, triton_backend_module

__all__ = ["triton_backend", "triton_backend_module"]
