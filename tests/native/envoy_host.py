"""``native/switchyard_edge.c`` linked with ``fake_envoy_host.c`` (a FAKE Envoy: the callbacks
over one in-memory stream) and driven through ctypes, hook by hook, as Envoy would call it."""

from __future__ import annotations

import ctypes
import pathlib
import shutil
import subprocess
from collections.abc import Mapping

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = (*(ROOT / "native" / name for name in ("switchyard_edge.c", "response.c", "rules.c")),
           pathlib.Path(__file__).with_name("fake_envoy_host.c"))
REQUEST_HEADER, REQUEST_TRAILER, RESPONSE_HEADER, RESPONSE_TRAILER = range(4)


class Buffer(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_char_p), ("length", ctypes.c_size_t)]


def _buf(b: bytes) -> Buffer:
    return Buffer(b, len(b))


def build(directory: pathlib.Path) -> pathlib.Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is needed to build the dynamic module's unit tests")
    out = directory / "libswitchyard_edge_fakehost.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-std=c11", "-D_POSIX_C_SOURCE=200809L",
                    "-Wall", "-Wextra", "-Werror", "-o", str(out), *map(str, SOURCES), "-lm"],
                   check=True)
    return out


class FakeEnvoyHost:
    """One stream at a time through one filter ("listener" or "rewrite") of the module."""

    def __init__(self, library: pathlib.Path) -> None:
        lib = self.lib = ctypes.CDLL(str(library))
        lib.envoy_dynamic_module_on_program_init.restype = ctypes.c_char_p
        lib.envoy_dynamic_module_on_http_filter_config_new.restype = ctypes.c_void_p
        lib.envoy_dynamic_module_on_http_filter_config_new.argtypes = [
            ctypes.c_void_p, Buffer, Buffer]
        lib.envoy_dynamic_module_on_http_filter_new.restype = ctypes.c_void_p
        lib.envoy_dynamic_module_on_http_filter_new.argtypes = [ctypes.c_void_p] * 2
        for hook in ("request_headers", "request_body", "response_headers"):
            fn = getattr(lib, f"envoy_dynamic_module_on_http_filter_{hook}")
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_bool]
        for hook in ("request_trailers", "response_trailers"):
            fn = getattr(lib, f"envoy_dynamic_module_on_http_filter_{hook}")
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.envoy_dynamic_module_on_http_filter_destroy.argtypes = [ctypes.c_void_p]
        lib.envoy_dynamic_module_on_http_filter_config_destroy.argtypes = [ctypes.c_void_p]
        lib.fh_header.restype = ctypes.c_char_p
        lib.fh_header.argtypes = [ctypes.c_int, ctypes.c_char_p]
        lib.fh_add_header.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p]
        lib.fh_set_body.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
        lib.fh_body.restype = ctypes.c_size_t
        lib.fh_body.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
        lib.fh_md_string.argtypes = [ctypes.c_char_p] * 3
        lib.fh_md_number.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_double]
        lib.fh_md_bool.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        lib.fh_host_md_string.argtypes = [ctypes.c_char_p] * 3
        lib.fh_set_attempted.argtypes = [ctypes.c_size_t]
        lib.fh_dynamic_number.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                          ctypes.POINTER(ctypes.c_double)]
        lib.fh_reply_status.restype = ctypes.c_char_p
        lib.fh_reply_message.restype = ctypes.c_char_p
        self.config: int | None = None
        self.stream: int | None = None

    def abi_version(self) -> str:
        return str(self.lib.envoy_dynamic_module_on_program_init().decode())

    def new_config(self, name: str, config: str = "") -> bool:
        self.config = self.lib.envoy_dynamic_module_on_http_filter_config_new(
            None, _buf(name.encode()), _buf(config.encode()))
        return bool(self.config)

    def start(self, headers: Mapping[str, str | list[str]], body: bytes | None = None,
              buffered: bytes = b"") -> None:
        """A new stream with these request headers (after a gRPC client's content-type and
        te, unless they give one) and (received, buffered) body."""
        self.lib.fh_reset()
        if "content-type" not in headers:
            headers = {"content-type": "application/grpc", **headers}
        if "te" not in headers:
            headers = {"te": "trailers", **headers}
        for k, v in headers.items():
            for one in [v] if isinstance(v, str) else v:
                self.lib.fh_add_header(REQUEST_HEADER, k.encode(), one.encode())
        if body is not None:
            self.lib.fh_set_body(0, body, len(body))
        if buffered:
            self.lib.fh_set_body(1, buffered, len(buffered))
        self.stream = self.lib.envoy_dynamic_module_on_http_filter_new(self.config, None)

    def metadata(self, ns: str, key: str, value: str | float | bool) -> None:
        if isinstance(value, bool):
            self.lib.fh_md_bool(ns.encode(), key.encode(), int(value))
        elif isinstance(value, float):
            self.lib.fh_md_number(ns.encode(), key.encode(), value)
        else:
            self.lib.fh_md_string(ns.encode(), key.encode(), value.encode())

    def served_by(self, endpoint: Mapping[str, str], attempted: int = 1) -> None:
        """The answering host: its endpoint metadata under ``switchyard`` (deployment,
        region, ...) and the stream's upstream attempts."""
        for key, value in endpoint.items():
            self.lib.fh_host_md_string(b"switchyard", key.encode(), value.encode())
        self.lib.fh_set_attempted(attempted)

    def request_headers(self, end_of_stream: bool = False) -> int:
        return int(self.lib.envoy_dynamic_module_on_http_filter_request_headers(
            None, self.stream, end_of_stream))

    def request_body(self, end_of_stream: bool = True) -> int:
        return int(self.lib.envoy_dynamic_module_on_http_filter_request_body(
            None, self.stream, end_of_stream))

    def response(self, headers: dict[str, str], trailers: dict[str, str]) -> None:
        for k, v in headers.items():
            self.lib.fh_add_header(RESPONSE_HEADER, k.encode(), v.encode())
        self.lib.envoy_dynamic_module_on_http_filter_response_headers(None, self.stream, False)
        for k, v in trailers.items():
            self.lib.fh_add_header(RESPONSE_TRAILER, k.encode(), v.encode())
        self.lib.envoy_dynamic_module_on_http_filter_response_trailers(None, self.stream)

    def header(self, name: str, kind: int = REQUEST_HEADER) -> str | None:
        v = self.lib.fh_header(kind, name.encode())
        return None if v is None else str(v.decode())

    def body(self) -> bytes:
        """What continues down the chain: the buffered body, then the received one."""
        out = b""
        for k in (1, 0):
            p = ctypes.c_void_p()
            n = self.lib.fh_body(k, ctypes.byref(p))
            out += ctypes.string_at(p.value, n) if n and p.value else b""
        return out

    def dynamic(self, ns: str, key: str) -> float | None:
        """The number the module set as the stream's dynamic metadata ``ns``/``key``."""
        out = ctypes.c_double()
        found = self.lib.fh_dynamic_number(ns.encode(), key.encode(), ctypes.byref(out))
        return out.value if found else None

    def cleared(self) -> int:
        return int(self.lib.fh_cleared())

    def keyed(self) -> int:
        """Per-key header callbacks (get_header, set_header) the module made since start."""
        return int(self.lib.fh_keyed())

    def reply(self) -> tuple[int, str] | None:
        """The trailers-only answer the module sent, as (grpc-status, grpc-message)."""
        if not self.lib.fh_replied():
            return None
        return int(self.lib.fh_reply_status()), str(self.lib.fh_reply_message().decode())

    def finish(self) -> None:
        self.lib.envoy_dynamic_module_on_http_filter_destroy(self.stream)
        self.stream = None
