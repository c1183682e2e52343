"""Why a call would go where it goes: the edge's own choice, explained candidate by candidate.

``explain_call`` runs the profile the edge would use, over the table in the order the edge
holds it (ascending cost), with the same ``Profile.choose`` (filters → scorers → picker, the
same fallbacks), so the pick it reports is the edge's, not a re-derivation. A profile that
spreads (``cheapest``) reports its whole spread band; the ``chosen`` one is one draw of the
picker. Every other candidate carries the filter that removed it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from placement.errors import (
    InvalidRequest,
    NoHealthyDeployment,
    NothingFeasible,
    PolicyUnsatisfiable,
)
from placement.model import CallContext, Candidate
from placement.pipeline import Profile, Verdict


@dataclass(frozen=True, slots=True)
class Explanation:
    profile: str
    verdicts: tuple[Verdict, ...]  # reason already says chosen / spread band / filter
    chosen: Candidate | None
    slo_met: bool
    spread_band: tuple[str, ...]  # deployment ids the edge spreads such calls over
    summary: str


def allowed_regions(names: Sequence[str], known: frozenset[str]) -> frozenset[str]:
    """An ``ExplainRequest``'s ``allowed_regions``, each a region's exact name (placement's
    ``Explain`` and an edge's answer alike). An entry naming no region (``""``, ``" r-west"``,
    ``"r-west,r-east"``) is refused: placement explained it as a region no deployment is in
    ("0 of 5 feasible") where an edge serves or refuses the call, and an edge's Explain read
    ``[""]`` as no restriction at all."""
    unknown = sorted(n for n in names if n not in known)
    if unknown:
        raise InvalidRequest(f"allowed_regions names unknown region(s) {unknown}; known: "
                             f"{sorted(known)}")
    return frozenset(names)


def explain_call(profile: Profile, cands: Sequence[Candidate], ctx: CallContext,
                 seed: int = 0) -> Explanation:
    """What ``profile`` picks for ``ctx`` from ``cands`` and why every candidate is or is not."""
    ordered = sorted(cands, key=lambda c: c.cost_usd)
    verdicts = profile.explain(ordered, ctx)
    feasible = [v.candidate for v in verdicts if v.feasible]
    objective = "+".join(s.name for s, _ in profile.scorers)
    try:
        decision = profile.choose(ordered, ctx, random.Random(seed), cost_sorted=True)
    except (NothingFeasible, NoHealthyDeployment, PolicyUnsatisfiable) as exc:
        return Explanation(profile.name, tuple(verdicts), None, False, (),
                           f"{len(feasible)} of {len(verdicts)} deployments feasible; "
                           f"{exc.message}")
    chosen = decision.candidate
    band = (_band(profile, feasible) or [chosen]) if decision.slo_met else [chosen]
    band_ids = tuple(c.deployment_id for c in band)
    out = []
    for v in verdicts:
        d = v.candidate.deployment_id
        reason = v.reason
        if d == chosen.deployment_id:
            reason = (f"chosen (profile {profile.name}: best {objective} among feasible"
                      + (f"; one draw from a spread band of {len(band)}" if len(band) > 1
                         else "") + ")" if decision.slo_met else
                      f"chosen as lowest-latency fallback: nothing meets the SLO ({v.reason})")
        elif d in band_ids:
            reason = (f"spread band (profile {profile.name}): within "
                      f"{(profile.cost_band or 0) * 100:g}% of the cheapest; calls spread "
                      "by spare capacity")
        out.append(Verdict(v.candidate, v.feasible, reason, v.score))
    summary = (f"{len(feasible)} of {len(verdicts)} deployments feasible; profile "
               f"{profile.name} picks {chosen.deployment_id}"
               + (f" (spread over {', '.join(band_ids)})" if len(band) > 1 else "")
               + ("" if decision.slo_met else " as a best effort: nothing meets the SLO"))
    return Explanation(profile.name, tuple(out), chosen, decision.slo_met, band_ids, summary)


def _band(profile: Profile, feasible: Sequence[Candidate]) -> list[Candidate]:
    """The feasible candidates the edge spreads over: within ``cost_band`` of the cheapest."""
    if profile.cost_band is None or not feasible:
        return []
    cheapest = min(c.cost_usd for c in feasible)
    width = profile.cost_band
    limit = (0.0 if cheapest <= 0 else
             cheapest / (1.0 - width) if width < 1 else float("inf"))
    return [c for c in feasible if c.cost_usd <= limit]
