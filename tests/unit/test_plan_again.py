"""``switchyard plan``'s ``next: ... --approve ID`` line names the placement it asked: pasted,
it asked the default config's placement (a capacity mesh run with ``--config`` answered
"cannot reach placement" or, worse, another mesh's)."""

from __future__ import annotations

from services.api.switchyard.v1 import capacity_pb2
from services.capacity.plan_view import again_command, render_plan
from services.cli_help import DEFAULT_CONFIG


def test_the_next_line_reaches_the_same_placement() -> None:
    pending = capacity_pb2.GetPlanResponse(pending=True, plan_id="p-7", apply_mode="approve")
    again = again_command("examples/mesh capacity.toml")
    assert again == "switchyard plan --config 'examples/mesh capacity.toml'"
    assert render_plan(pending, again).endswith(
        "next: switchyard plan --config 'examples/mesh capacity.toml' --approve p-7")
    assert again_command(DEFAULT_CONFIG) == "switchyard plan"
    assert again_command(DEFAULT_CONFIG, "127.0.0.1:50070") == (
        "switchyard plan --placement 127.0.0.1:50070")
    assert "next:" not in render_plan(capacity_pb2.GetPlanResponse(plan_id="p-7"), again)
