"""Moving an LLM stream that is going to miss its TPOT objective to a deployment predicted to
meet it (issue 14: a GPU that slows down under streams already decoding on it).

The caller's TPOT is the stream's mean gap between tokens after the first, ``(t_last −
t_first) / (M − 1)`` over all its ``M`` tokens, whichever deployments sent them
(``services.edge.token_stats.StreamMeter.tpot_ms``). ``MoveWatch`` follows one stream as the
edge sees its tokens arrive (``tokens(now, count)``) and predicts that TPOT:

- staying: ``(E + R × pace) / (M − 1)``, with ``E`` the time since the stream's first token,
  ``R`` the tokens still owed and ``pace`` the mean gap over its last ``window`` tokens on the
  deployment serving it now;
- moving to ``d``: ``(E + gap(d) + (R − 1) × tpot(d)) / (M − 1)``, with ``tpot(d)`` and the
  re-prefill's TTFT ``ttft(d)`` from ``placement.streams.predict`` for the prompt plus the
  tokens delivered, asking ``R`` more (``move_options``), and ``gap(d) = ttft(d) / (1 −
  TTFT_HEADROOM)``: the room for other edges' prefills a new stream's TTFT leaves
  (``placement.streams``), here spent on the re-prefill.

``decide`` names a target when staying has been predicted to miss the objective over the last
``confirm`` tokens in a row (hysteresis: a burst of slow tokens is not a slow deployment), the
stream has moved fewer than ``max_moves`` times, and a deployment it may use is measured and
predicted to finish the stream within ``(1 − margin)`` of the objective: the cheapest of those
(its predicted cost for the rest, re-prefill included).

``handoff`` (issue 14's cost target: a stream whose prompt only a fast, dear GPU prefills in
time then decodes there at a small batch, up to 20× that pool's full-batch floor) moves a
stream that is on pace to a cheaper deployment once the time it has banked against its
objective pays for the re-prefill there, whatever its length: after ``c`` tokens in ``E`` ms,
a target ``d`` with ``E + gap(d) ≤ c × T × (1 − margin)`` and ``tpot(d) ≤ T × (1 − margin)``
keeps the stream's TPOT ``(E + gap + (L − c − 1) × tpot(d)) / (L − 1)`` within ``T × (1 −
margin)`` for every length ``L > c`` (the edge knows only ``max_tokens``, not where the
stream ends). It must also be predicted to cost at most ``1 − HANDOFF_SAVING`` of staying,
both priced as if the stream decoded alone (``stay_cost``; ``move_options(share_batch=
False)``, the target's re-prefill included) for ``handoff_tokens`` more tokens: as many as it
delivered so far, at most those owed (an output length's tail is long: a stream that has
lasted ``c`` tokens is as likely to end before ``2c`` as after; priced for all it may still
owe, the code trace's 13-token median streams would pay a re-prefill to save nothing), and
its re-prefill's predicted TTFT must be within ``HANDOFF_TTFT`` of the stream's own TTFT
objective (it holds the target's prefill queue as long as a new stream of its class may).
It is asked every ``HANDOFF_EVERY`` tokens, at most ``max_handoffs`` times; a
handoff is not a rescue move (``max_moves``): a target that turns out slow can still be left.
Prefill on the fast GPU, decode on the cheap one: Splitwise's split (Patel et al., ISCA
2024), made by the resumption path's re-prefill instead of a KV-cache transfer.

Which deployments it may use is the caller's business: the edge passes the ones its hints
allow (hard filters, regions, cost cap), of the stream's variant unless
``x-allow-variant-change: true`` and the other variant declares resumption, never the one
serving it now. The edge then cancels the backend call and resumes
the generation there (``services.edge.generation``); the token simulator drives the same
object (``benchmarks/costsim/tokens_policies.py``). Pure: no I/O; time is passed in.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from placement.errors import ConfigError
from placement.model import Candidate
from placement.streams import TTFT_HEADROOM, StreamAsk, StreamOption, TokenEstimate, predict

MOVE_WINDOW = 8  # the pace is the mean gap over this many of the stream's latest tokens
MOVE_CONFIRM = 4  # tokens in a row predicted to miss before a move (hysteresis)
MOVE_MARGIN = 0.1  # a target must be predicted to finish within 90 % of the objective
MAX_MOVES = 1  # moves per stream
MOVE_SLACK = 0.0  # staying must be predicted above the objective × (1 + this) to count as a miss
# cost handoffs per stream (0: none, the default: measured by ``benchmarks.tokens``'
# ``switchyard-handoff*``, not kept; benchmarks/RESULTS.md, issue 14 candidates, 2026-11-27)
MAX_HANDOFFS = 0
HANDOFF_EVERY = 8  # tokens between two handoff checks (each predicts every target)
HANDOFF_SAVING = 0.25  # a handoff's predicted cost for the rest ≤ (1 − this) × staying's
# a handoff's re-prefill must be predicted within this fraction of the stream's TTFT objective
# (a new stream's bound, 1 − TTFT_HEADROOM: it holds the target's prefill queue no longer
# than a stream of its class chosen there would)
HANDOFF_TTFT = 1.0 - TTFT_HEADROOM


@dataclass(frozen=True, slots=True)
class MoveChoice:
    """``decide``'s answer: the deployment to move to (None: stay) and why."""

    target: Candidate | None
    reason: str
    stay_ms: float = math.nan  # the stream's predicted TPOT if it stays
    moved_ms: float = math.inf  # the target's predicted stream TPOT (inf: no target)


def move_options(cands: Sequence[Candidate], estimates: Mapping[str, TokenEstimate],
                 loads: Mapping[str, int], ask: StreamAsk,
                 pending: Mapping[str, int] | None = None,
                 tpot_factors: Mapping[str, float] | None = None,
                 share_batch: bool = True) -> list[StreamOption]:
    """``predict`` for each of ``cands`` (the deployments the stream may move to) for the
    resumed request ``ask``: the prompt plus the tokens delivered, asking for those owed.
    ``share_batch=False``: each priced as if it decoded alone (``handoff``'s comparison)."""
    queued, slower = pending or {}, tpot_factors or {}
    return [predict(c, estimates.get(c.deployment_id), loads.get(c.deployment_id, 0), ask,
                    queued.get(c.deployment_id, 0),
                    tpot_factor=slower.get(c.deployment_id, 1.0), share_batch=share_batch)
            for c in cands]


class MoveWatch:
    """One stream's pace and whether it should move (see the module docstring)."""

    def __init__(self, tpot_ms: float, total_tokens: int, window: int = MOVE_WINDOW,
                 confirm: int = MOVE_CONFIRM, margin: float = MOVE_MARGIN,
                 max_moves: int = MAX_MOVES, ttft_headroom: float = TTFT_HEADROOM,
                 slack: float = MOVE_SLACK, max_handoffs: int = MAX_HANDOFFS,
                 handoff_saving: float = HANDOFF_SAVING, ttft_ms: float | None = None,
                 handoff_ttft: float = HANDOFF_TTFT) -> None:
        if (tpot_ms <= 0 or window < 1 or confirm < 0 or not 0.0 <= margin < 1.0
                or max_moves < 0 or not 0.0 <= ttft_headroom < 1.0 or slack < 0
                or max_handoffs < 0 or not 0.0 <= handoff_saving < 1.0):
            raise ConfigError(f"MoveWatch: tpot_ms {tpot_ms} > 0, window {window} ≥ 1, "
                              f"confirm {confirm} ≥ 0, margin {margin} in [0, 1), max_moves "
                              f"{max_moves} ≥ 0, ttft_headroom {ttft_headroom} in [0, 1), "
                              f"slack {slack} ≥ 0, max_handoffs {max_handoffs} ≥ 0 and "
                              f"handoff_saving {handoff_saving} in [0, 1) required")
        self.tpot_ms, self.total = tpot_ms, total_tokens
        self._window, self._confirm, self._margin = window, confirm, margin
        self._max, self._headroom = max_moves, ttft_headroom
        self.miss_ms = tpot_ms * (1.0 + slack)  # staying above this is a predicted miss
        self.first_s: float | None = None
        self.count = 0  # tokens delivered in all
        self.moves = 0
        self.handoffs, self._max_handoffs, self._saving = 0, max_handoffs, handoff_saving
        # the re-prefill's predicted TTFT bound (the stream's TTFT objective × handoff_ttft)
        self._reprefill_ms = math.inf if ttft_ms is None else ttft_ms * handoff_ttft
        self._handoff_at = 0  # the count at the last handoff check
        self._samples: deque[tuple[float, int]] = deque()  # (time s, count) on this attempt
        self._miss_since: int | None = None  # count when staying was first predicted to miss

    def tokens(self, now_s: float, count: int) -> None:
        """``count`` tokens were delivered in all by ``now_s`` (the edge: at each token)."""
        if self.first_s is None:
            self.first_s = now_s
        self.count = count
        s = self._samples
        s.append((now_s, count))
        while len(s) > 1 and s[1][1] <= count - self._window:
            s.popleft()

    def attempt_started(self) -> None:
        """The stream continues on another deployment: its pace is measured afresh."""
        self._samples.clear()
        self._miss_since = None

    def pace_ms(self) -> float | None:
        """The mean gap over the last ``window`` tokens on this deployment (None: fewer)."""
        if len(self._samples) < 2:
            return None
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (t1 - t0) * 1000.0 / (c1 - c0) if c1 - c0 >= self._window else None

    @property
    def owed(self) -> int:
        return max(self.total - self.count, 0)

    def stay_ms(self, now_s: float) -> float | None:
        """The stream's TPOT if it stays where it is, at its current pace."""
        pace = self.pace_ms()
        if pace is None or self.first_s is None or self.total <= 1:
            return None
        return ((now_s - self.first_s) * 1000.0 + self.owed * pace) / (self.total - 1)

    def moved_ms(self, now_s: float, o: StreamOption) -> float:
        """The stream's TPOT if it moves to ``o``'s deployment now."""
        assert self.first_s is not None
        gap = o.ttft_ms / (1.0 - self._headroom)
        return (((now_s - self.first_s) * 1000.0 + gap + max(self.owed - 1, 0) * o.tpot_ms)
                / (self.total - 1))

    def decide(self, now_s: float, options: Sequence[StreamOption]) -> MoveChoice:
        """Stay or move (``options``: ``move_options`` for where the stream may go). A move
        it names is counted: the caller makes it."""
        stay = self.stay_ms(now_s)
        if stay is None or self.owed <= 0:
            return MoveChoice(None, f"fewer than {self._window} tokens on this deployment")
        if stay <= self.miss_ms:
            self._miss_since = None
            return MoveChoice(None, "on pace for its TPOT objective", stay)
        if self._miss_since is None:
            self._miss_since = self.count
        if self.moves >= self._max:
            return MoveChoice(None, f"predicted to miss; moved {self.moves} time(s) already",
                              stay)
        if self.count - self._miss_since < self._confirm:
            return MoveChoice(None, f"predicted to miss for fewer than {self._confirm} tokens",
                              stay)
        limit = self.tpot_ms * (1.0 - self._margin)
        fits = [(o.cost_usd, moved, o) for o in options if o.measured
                if (moved := self.moved_ms(now_s, o)) <= limit]
        if not fits:
            return MoveChoice(None, "predicted to miss; no deployment it may move to is "
                              f"predicted to finish within {limit:.1f} ms per token", stay)
        _, moved, best = min(fits, key=lambda f: (f[0], f[1]))
        self.moves += 1
        self.attempt_started()
        return MoveChoice(best.candidate,
                          f"slow: {stay:.1f} ms per token predicted here against "
                          f"{self.tpot_ms:g}; {best.candidate.deployment_id}: {moved:.1f}",
                          stay, moved)

    def handoff_due(self, now_s: float) -> bool:
        """Whether to ask ``handoff`` now (cheap, before any target is predicted): the
        stream is on pace, may still hand off, and ``HANDOFF_EVERY`` tokens passed since the
        last check."""
        stay = self.stay_ms(now_s)
        return (stay is not None and stay <= self.miss_ms and self.owed > 0
                and self.handoffs < self._max_handoffs
                and self.count - self._handoff_at >= HANDOFF_EVERY)

    @property
    def handoff_tokens(self) -> int:
        """The tokens a handoff is priced for: as many as delivered, at most those owed."""
        return min(self.count, self.owed)

    def handoff(self, now_s: float, stay_cost_usd: float,
                options: Sequence[StreamOption]) -> MoveChoice:
        """Move an on-pace stream to a cheaper deployment (see the module docstring)?
        ``stay_cost_usd``: what ``handoff_tokens`` cost where it is (``stay_cost``);
        ``options``: ``move_options(share_batch=False)`` for where it may go, asking
        ``handoff_tokens``. A handoff it names is counted."""
        assert self.first_s is not None
        self._handoff_at = self.count
        limit = self.tpot_ms * (1.0 - self._margin)
        banked = self.count * limit - (now_s - self.first_s) * 1000.0
        cap = stay_cost_usd * (1.0 - self._saving)
        fits = [o for o in options if o.measured and o.tpot_ms <= limit
                and o.ttft_ms / (1.0 - self._headroom) <= banked and o.cost_usd <= cap
                and o.ttft_ms <= self._reprefill_ms]
        if not fits:
            return MoveChoice(None, "on pace; no cheaper deployment whose re-prefill the time "
                              "banked pays for")
        best = min(fits, key=lambda o: (o.cost_usd, o.tpot_ms))
        choice = MoveChoice(best.candidate,
                            f"cheaper: ${best.cost_usd:.8f} for {self.handoff_tokens} more "
                            f"tokens on {best.candidate.deployment_id} against "
                            f"${stay_cost_usd:.8f} here",
                            self.stay_ms(now_s) or math.nan, self.moved_ms(now_s, best))
        self.handoffs += 1
        self.attempt_started()
        return choice


def stay_cost(est: TokenEstimate | None, load: int, owed: int) -> float:
    """The predicted cost of decoding ``owed`` more tokens where the stream is, with ``load``
    of this edge's streams there (itself included), priced as if it decoded alone at the
    TPOT of that batch, as ``move_options(share_batch=False)`` prices a target (unmeasured:
    0, nothing is known to be cheaper)."""
    if est is None:
        return 0.0
    n = max(load, 1)
    return est.usd_per_second * owed * (est.tpot_base_ms + est.tpot_per_stream_ms * (n - 1)) \
        / 1000.0
