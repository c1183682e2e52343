"""Panic routing: what a call may still try when every deployment it could use is ejected.

Outlier ejection is a guess from recent failures; when it has taken out every deployment a
call may use, refusing the call ("no healthy deployment") turns a guess into an outage (an
overloaded host once had every remote deployment ejected by its own slowness). So, as
Envoy's panic threshold does for a cluster, the call is tried on an ejected deployment
instead, one at a time:

- only deployments unusable **because outlier detection ejected them** (passed in as
  ``ejected_until``, deployment → when its ejection ends on the caller's clock) are panic
  targets; a failing active health check, a drain, a cordon, a failed attempt of this call
  keep a deployment out;
- **never a weaker hint**: the profile's filters run as for any call (quality floor,
  regions, cost cap, SLO), with only that one deployment's ejection lifted, so a deployment
  the call's policy excludes is never a panic target;
- the deployment whose ejection ends **soonest** goes first (ties by id): the one the detector
  itself would let back first.

Pure: the caller passes its profile's choice as ``choose``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

from placement.errors import SwitchyardError
from placement.model import CallContext, Candidate
from placement.pipeline import Decision


def panic_order(ejected_until: Mapping[str, float]) -> tuple[str, ...]:
    """Outlier-ejected deployments, the one whose ejection ends soonest first."""
    return tuple(sorted(ejected_until, key=lambda d: (ejected_until[d], d)))


def panic_choice(cands: Sequence[Candidate], ctx: CallContext,
                 ejected_until: Mapping[str, float],
                 choose: Callable[[CallContext], Decision]) -> Decision | None:
    """The deployment a call nothing usable is left for may still try, or None.

    ``choose(ctx)`` is the call's own choice (its profile), raising ``SwitchyardError`` when
    nothing passes; it is asked with one ejected deployment usable at a time, in
    ``panic_order``, so every other filter still applies."""
    known = {c.deployment_id for c in cands}
    for dep in panic_order(ejected_until):
        if dep not in known or dep in ctx.exclude or dep not in ctx.unusable:
            continue
        lifted = MappingProxyType({d: why for d, why in ctx.unusable.items() if d != dep})
        try:
            decision = choose(replace(ctx, unusable=lifted))
        except SwitchyardError:
            continue
        if decision.candidate.deployment_id == dep:
            return decision
    return None
