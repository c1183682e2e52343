"""FakeConsul: an in-process HTTP fake of the few Consul agent endpoints Switchyard uses.

It is a FAKE, not Consul: no raft, no gossip, no check runner, one node, one datacenter.
It follows Consul's documented HTTP API for exactly these endpoints:

- ``PUT /v1/agent/service/register`` (``?replace-existing-checks``; ``Check``/``Checks``)
- ``PUT /v1/agent/service/deregister/<id>``
- ``GET /v1/health/service/<name>`` (``?passing``, blocking ``?index=&wait=``)
- ``GET /v1/catalog/service/<name>`` (blocking)
- ``GET /v1/kv/<key>`` (``?recurse``, blocking, base64 ``Value``, ``ModifyIndex``),
  ``PUT /v1/kv/<key>``, ``DELETE /v1/kv/<key>``

Every read answers ``X-Consul-Index``. As in Consul, a new check starts ``critical`` unless
its definition gives ``Status``; the test moves it with :meth:`FakeConsul.set_check_status`
(standing in for the agent running the check). :meth:`force_index_reset` lowers the raft
index (a snapshot restore) and wakes blocked queries, so clients see the index go backwards.
:meth:`stop` / :meth:`start` take the listener down and up on the same port (Consul away);
:meth:`set_unavailable` answers 500 "No cluster leader" instead. With ``token`` set, every
request must carry it in ``X-Consul-Token`` (or ``?token=``), else 403 as Consul answers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
NODE = {"ID": "fake-node-id", "Node": "fake-node", "Address": "127.0.0.1", "Datacenter": "dc1"}


def parse_wait(value: str | None) -> float:
    """Consul's ``wait``: a Go duration, default 5 minutes, capped at 10."""
    if not value:
        return 300.0
    m = _DURATION.match(value)
    if not m:
        raise web.HTTPBadRequest(text=f"Invalid wait time: {value!r}")
    return min(600.0, float(m.group(1)) * _UNITS[m.group(2)])


def _lower(d: dict[str, Any]) -> dict[str, Any]:
    """Consul decodes request bodies case-insensitively; so does the fake."""
    return {k.lower(): v for k, v in d.items()}


@dataclass
class FakeService:
    id: str
    name: str
    address: str
    port: int
    tags: list[str]
    meta: dict[str, str]
    checks: list[dict[str, Any]] = field(default_factory=list)


class FakeConsul:
    """See the module docstring. Start with ``await fake.start()``; ``fake.address`` is the URL."""

    def __init__(self, *, token: str | None = None) -> None:
        self.token = token
        self.services: dict[str, FakeService] = {}
        self.kv: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path_qs, token)
        self.unavailable = False
        self.blocked = 0  # blocking queries being held right now
        self.port = 0
        self._index = 10
        self._table_index = {"services": 1, "kv": 1}
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on 127.0.0.1 (port 0 the first time, the same port after a stop)."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_put("/v1/agent/service/register", self._register)
        app.router.add_put("/v1/agent/service/deregister/{id}", self._deregister)
        app.router.add_get("/v1/health/service/{name}", self._health)
        app.router.add_get("/v1/catalog/service/{name}", self._catalog)
        app.router.add_get("/v1/kv/{key:.*}", self._kv_get)
        app.router.add_put("/v1/kv/{key:.*}", self._kv_put)
        app.router.add_delete("/v1/kv/{key:.*}", self._kv_delete)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the listener and every open connection: clients see connection errors."""
        if self._runner is not None:
            self._wake()
            await self._runner.cleanup()
            self._runner = None

    def set_unavailable(self, down: bool) -> None:
        """Answer every request with 500 "No cluster leader" (servers lost quorum)."""
        self.unavailable = down
        self._wake()

    # --- test controls ----------------------------------------------------------------------

    def set_check_status(self, service_id: str, status: str) -> None:
        """Set every check of ``service_id`` to passing | warning | critical."""
        if status not in ("passing", "warning", "critical"):
            raise ValueError(f"status {status!r}")
        for check in self.services[service_id].checks:
            check["Status"] = status
        self._bump("services")

    def force_index_reset(self, to: int = 2) -> None:
        """Lower the raft index, as a snapshot restore does, and wake blocked queries."""
        self._index = to
        self._table_index = {t: min(i, to) for t, i in self._table_index.items()}
        for entry in self.kv.values():
            entry["ModifyIndex"] = min(entry["ModifyIndex"], to)
            entry["CreateIndex"] = min(entry["CreateIndex"], to)
        self._wake()

    def put_kv(self, key: str, value: bytes | str) -> None:
        """Write a key directly (same effect as ``PUT /v1/kv/<key>``)."""
        self._kv_write(key, value.encode() if isinstance(value, str) else value)

    # --- internals ------------------------------------------------------------------------

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _bump(self, table: str) -> int:
        self._index += 1
        self._table_index[table] = self._index
        self._wake()
        return self._index

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        token = request.headers.get("X-Consul-Token") or request.query.get("token")
        self.requests.append((request.method, request.path_qs, token))
        if self.unavailable:
            return web.Response(status=500, text="No cluster leader")
        if self.token is not None and token != self.token:
            return web.Response(status=403, text="ACL not found" if token else
                                "Permission denied: anonymous token lacks permission")
        return await handler(request)  # type: ignore[no-any-return]

    async def _block(self, request: web.Request, table: str) -> None:
        """Hold a read while ``?index`` is at least the table's index, up to ``wait``."""
        raw = request.query.get("index")
        if raw is None:
            return
        try:
            index = int(raw)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"Invalid index: {raw!r}") from exc
        deadline = asyncio.get_running_loop().time() + parse_wait(request.query.get("wait"))
        self.blocked += 1
        try:
            while index > 0 and self._table_index[table] <= index and not self.unavailable:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
                if changed.is_set() and self._table_index[table] < index:
                    return  # restored to an older index: answer now, as Consul's abandon does
        finally:
            self.blocked -= 1

    def _json(self, body: Any, table: str, status: int = 200) -> web.Response:
        text = json.dumps(body) if status == 200 else ""
        return web.Response(status=status, text=text, content_type="application/json",
                            headers={"X-Consul-Index": str(self._table_index[table]),
                                     "X-Consul-KnownLeader": "true",
                                     "X-Consul-LastContact": "0"})

    async def _register(self, request: web.Request) -> web.Response:
        body = _lower(await request.json())
        if not body.get("name"):
            return web.Response(status=400, text="Missing service name")
        sid = body.get("id") or body["name"]
        defs = [body["check"]] if body.get("check") else list(body.get("checks") or [])
        checks = []
        for n, raw in enumerate(defs, start=1):
            c = _lower(raw)
            kinds = [k for k in ("grpc", "http", "tcp", "ttl", "args") if c.get(k)]
            if len(kinds) != 1 or (kinds[0] != "ttl" and not c.get("interval")):
                return web.Response(status=400, text=f"Invalid check: {raw}")
            check_id = c.get("checkid") or c.get("id") or (
                f"service:{sid}" if len(defs) == 1 else f"service:{sid}:{n}")
            checks.append({"Node": NODE["Node"], "CheckID": check_id,
                           "Name": c.get("name") or f"Service '{body['name']}' check",
                           "Status": c.get("status") or "critical", "ServiceID": sid,
                           "ServiceName": body["name"], "Type": kinds[0],
                           "Definition": raw})
        old = self.services.get(sid)
        if old is not None and "replace-existing-checks" not in request.query:
            known = {c["CheckID"] for c in checks}
            checks += [c for c in old.checks if c["CheckID"] not in known]
        self.services[sid] = FakeService(
            id=sid, name=body["name"], address=body.get("address") or "",
            port=int(body.get("port") or 0), tags=list(body.get("tags") or []),
            meta=dict(body.get("meta") or {}), checks=checks)
        self._bump("services")
        return web.Response(status=200)

    async def _deregister(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        if sid not in self.services:
            return web.Response(status=404, text=f'Unknown service ID "{sid}". Ensure that the '
                                                 "service ID is passed, not the service name.")
        del self.services[sid]
        self._bump("services")
        return web.Response(status=200)

    def _service_json(self, s: FakeService) -> dict[str, Any]:
        return {"ID": s.id, "Service": s.name, "Tags": s.tags, "Address": s.address,
                "Port": s.port, "Meta": s.meta, "Weights": {"Passing": 1, "Warning": 1}}

    async def _health(self, request: web.Request) -> web.Response:
        await self._block(request, "services")
        passing = request.query.get("passing")
        only_passing = passing is not None and passing.lower() not in ("false", "0")
        out = []
        for s in sorted(self.services.values(), key=lambda s: s.id):
            if s.name != request.match_info["name"]:
                continue
            serf = {"Node": NODE["Node"], "CheckID": "serfHealth", "Name": "Serf Health Status",
                    "Status": "passing", "ServiceID": "", "ServiceName": ""}
            checks = [serf, *({k: v for k, v in c.items() if k != "Definition"}
                              for c in s.checks)]
            if only_passing and any(c["Status"] != "passing" for c in checks):
                continue
            out.append({"Node": NODE, "Service": self._service_json(s), "Checks": checks})
        return self._json(out, "services")

    async def _catalog(self, request: web.Request) -> web.Response:
        await self._block(request, "services")
        out = [{"ID": NODE["ID"], "Node": NODE["Node"], "Address": NODE["Address"],
                "Datacenter": NODE["Datacenter"], "ServiceID": s.id, "ServiceName": s.name,
                "ServiceAddress": s.address, "ServicePort": s.port, "ServiceTags": s.tags,
                "ServiceMeta": s.meta}
               for s in sorted(self.services.values(), key=lambda s: s.id)
               if s.name == request.match_info["name"]]
        return self._json(out, "services")

    async def _kv_get(self, request: web.Request) -> web.Response:
        await self._block(request, "kv")
        key = request.match_info["key"]
        if "recurse" in request.query:
            found = [self.kv[k] for k in sorted(self.kv) if k.startswith(key)]
        else:
            found = [self.kv[key]] if key in self.kv else []
        if not found:
            return self._json(None, "kv", status=404)
        return self._json(
            [{**e, "Value": base64.b64encode(e["Value"]).decode() if e["Value"] else None}
             for e in found], "kv")

    async def _kv_put(self, request: web.Request) -> web.Response:
        self._kv_write(request.match_info["key"], await request.read())
        return self._json(True, "kv")

    async def _kv_delete(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        doomed = [k for k in self.kv if k == key or ("recurse" in request.query
                                                     and k.startswith(key))]
        for k in doomed:
            del self.kv[k]
        self._bump("kv")  # Consul keeps a tombstone, so the list index never goes backwards
        return self._json(True, "kv")

    def _kv_write(self, key: str, value: bytes) -> None:
        index = self._bump("kv")
        created = self.kv.get(key, {}).get("CreateIndex", index)
        self.kv[key] = {"LockIndex": 0, "Key": key, "Flags": 0, "Value": value,
                        "CreateIndex": created, "ModifyIndex": index}


@contextlib.asynccontextmanager
async def running_fake(token: str | None = None) -> AsyncIterator[FakeConsul]:
    """A started fake for a test, stopped after it."""
    server = FakeConsul(token=token)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def client_settings(fake: FakeConsul, **over: object) -> dict[str, object]:
    """A test's Consul client settings against ``fake``: its address and token, blocking
    queries of 1 s and fast retries, with ``over`` on top."""
    return {"address": fake.address, **({"token": fake.token} if fake.token else {}),
            "wait_s": 1.0, "rate_burst": 5, "rate_refill_s": 0.01, "retry_min_s": 0.02,
            "retry_max_s": 0.1, **over}
