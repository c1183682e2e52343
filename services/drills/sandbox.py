"""A private copy of a mesh config on free ports, for drills, tests and benchmarks.

:func:`sandbox_config` reads a mesh TOML (e.g. ``examples/mesh.toml``), gives every listener
a port free right now (backends' gRPC and metrics, edges, placement, the node agent's
metrics, a free block for the emulated-WAN relays), points ``run_dir`` at a private
directory and writes the result, so a drill mesh never collides with a ``switchyard up``
already running on the default ports.
"""

from __future__ import annotations

import pathlib
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from services.ports import free_port, free_ports


def sandbox_config(source: str | pathlib.Path, dest_dir: str | pathlib.Path, *,
                   backends: Iterable[str] | None = None,
                   overrides: Mapping[str, Mapping[str, Any]] | None = None) -> pathlib.Path:
    """Write ``<dest_dir>/mesh.toml``: ``source`` on free ports with ``run_dir`` inside ``dest_dir``.

    ``backends`` keeps only those backend ids (a smaller mesh for tests); ``overrides``
    merges keys into top-level tables, e.g. ``{"edge": {"eject_base_s": 2}}``.
    """
    src = pathlib.Path(source).resolve()
    dest = pathlib.Path(dest_dir).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = tomllib.loads(src.read_text())
    if backends is not None:
        keep = set(backends)
        raw["backends"] = [b for b in raw["backends"] if b["id"] in keep]
    for b in raw["backends"]:
        b["grpc_port"], b["metrics_port"] = free_port(), free_port()
    for e in raw.get("edges", []):
        e["port"], e["metrics_port"] = free_port(), free_port()
    placement = raw.setdefault("placement", {})
    placement["port"], placement["metrics_port"] = free_port(), free_port()
    placement.pop("replicas", None)
    agent = raw.get("agent", {})
    if agent.get("metrics_port"):  # the node agent's /metrics (9153 in examples/mesh.toml)
        agent["metrics_port"] = free_port()
    for shard in placement.get("shards", []):  # every replica of every shard on a free port
        shard["replicas"] = [f"127.0.0.1:{free_port()}" for _ in shard["replicas"]]
        if shard.get("metrics_ports"):
            shard["metrics_ports"] = [free_port() for _ in shard["metrics_ports"]]
    wan = raw.setdefault("wan", {})
    n_relays = len(raw.get("edges", [])) * max(1, len(raw["backends"]))
    wan["relay_base_port"] = free_ports(n_relays + 1, consecutive=True)[0]
    prices = raw.get("prices_file", "prices.toml")
    raw["prices_file"] = str((src.parent / prices).resolve())
    raw["run_dir"] = str(dest / "run")
    for table, values in (overrides or {}).items():
        raw.setdefault(table, {}).update(values)
    path = dest / "mesh.toml"
    path.write_text(dumps_toml(raw))
    return path


# -- a minimal TOML writer (the standard library reads TOML but does not write it) ----------

def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def dumps_toml(data: Mapping[str, Any]) -> str:
    """TOML for a config-shaped mapping: scalars, tables and arrays of tables, one level deep."""
    top = [f"{k} = {_value(v)}" for k, v in data.items()
           if not isinstance(v, dict) and not (_is_table_array(v) and _all_flat(v))]
    out = ["\n".join(top), ""]
    for k, v in data.items():
        if isinstance(v, dict):
            out += [f"[{k}]", *(f"{kk} = {_value(vv)}" for kk, vv in v.items()), ""]
        elif _is_table_array(v) and _all_flat(v):
            for item in v:
                out += [f"[[{k}]]", *(f"{kk} = {_value(vv)}" for kk, vv in item.items()), ""]
    return "\n".join(out)


def _all_flat(items: list[dict[str, Any]]) -> bool:
    # ``rtt = [ {a, b, ms}, ... ]`` stays an inline array; ``[[backends]]`` become tables.
    return not all(set(x) <= {"a", "b", "ms"} for x in items)
