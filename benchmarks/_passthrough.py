"""The floor: a minimal grpc.aio byte-passthrough proxy (no routing, no logs, no metrics).

    python -m benchmarks._passthrough LISTEN_PORT UPSTREAM_ADDRESS

One generic handler for ``ModelInfer`` that forwards the request bytes to one upstream
channel and returns the response bytes, on uvloop. The data-plane benchmark runs it as the
``bare-aio`` target so the edge's own cost (routing, hints, logs, metrics) is the
difference between the two in the same run.
"""

from __future__ import annotations

import sys

import grpc
import uvloop

METHOD = "/inference.GRPCInferenceService/ModelInfer"


async def serve(port: int, upstream: str) -> None:
    channel = grpc.aio.insecure_channel(upstream)
    call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)

    async def infer(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await call(raw)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2]))
