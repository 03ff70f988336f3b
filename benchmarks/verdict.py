"""Verdicts of compare.py: the number a case's target bounds, per round and overall, and
whether the run was steady enough to decide.

A verdict is NOISY (counted as neither PASS nor FAIL) when
  * the raw ratio and the normalised ratio (each side's overhead divided by its own bare
    forward) fall on different sides of the target, or
  * the per-round values spread more than SPREAD_LIMIT: (max - min) / median > 25 %, or
  * fewer than 2 rounds gave a value (no spread to judge).
"""
from __future__ import annotations

import statistics
from typing import List, Optional, Tuple

SPREAD_LIMIT = 0.25


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _div(a, b):
    return a / b if a is not None and b else None


def round_values(case, ours: dict, peer: dict, versus: Optional[dict]) -> List[dict]:
    """One dict per round: the raw numbers and the value the target bounds (None if missing)."""
    rows = []
    o_rounds = ours.get("per_round", [])
    p_rounds = peer.get("per_round", [])
    v_rounds = (versus or {}).get("per_round", [])
    n = len(o_rounds)
    for i in range(n):
        o = o_rounds[i]
        p = p_rounds[i] if i < len(p_rounds) else {}
        row = {"round": i + 1, "ours_overhead": o.get("overhead"), "ours_base": o.get("base"),
               "peer_overhead": p.get("overhead"), "peer_base": p.get("base")}
        if case.kind == "peer":
            row["value"] = _div(o.get("overhead"), p.get("overhead"))
            ob, pb = o.get("base"), p.get("base")
            row["norm"] = _div(_div(o.get("overhead"), ob), _div(p.get("overhead"), pb)) if ob and pb else None
        elif case.kind == "self":
            row["value"] = _div(o.get("overhead"), o.get("base"))
        elif case.kind == "vs":
            v = v_rounds[i] if i < len(v_rounds) else {}
            row["versus_overhead"] = v.get("overhead")
            row["value"] = _div(o.get("overhead"), v.get("overhead"))
        elif case.kind == "abs":
            row["value"] = (o.get("extra") or {}).get(case.metric)
        rows.append(row)
    inner = ((o_rounds[0].get("extra") or {}).get("round_ratios") if n == 1 else None)
    if case.kind == "abs" and inner:  # one worker that ran its own rounds (vllm.py)
        rows = [{"round": i + 1, "value": v} for i, v in enumerate(inner)]
    return rows


def overall(case, ours: dict, peer: dict, versus: Optional[dict]) -> Tuple[Optional[float], Optional[float]]:
    """(value, norm) from the per-side medians over rounds (norm only for kind 'peer')."""
    if case.kind == "peer":
        po, oo = peer.get("overhead"), ours.get("overhead")
        value = _div(oo, po) if po and po > 0 else None
        norm = None
        if po and po > 0 and peer.get("base") and ours.get("base"):
            norm = (oo / ours["base"]) / (po / peer["base"])
        return value, norm
    if case.kind == "self":
        return _div(ours.get("overhead"), ours.get("base")), None
    if case.kind == "vs":
        return _div(ours.get("overhead"), (versus or {}).get("overhead")), None
    return _med([(e or {}).get(case.metric) for e in ours.get("extras", [])]), None


def spread(values) -> Optional[float]:
    vals = [v for v in values if v is not None]
    if len(vals) < 2:
        return None
    m = statistics.median(vals)
    return (max(vals) - min(vals)) / abs(m) if m else None


def meets(case, value) -> bool:
    return value >= case.target if case.at_least else value <= case.target


def decide(case, value, norm, per_round) -> Tuple[str, str]:
    """(status, note) for a case with a target and a value."""
    ok = meets(case, value)
    notes = []
    if norm is not None and meets(case, norm) != ok:
        notes.append(f"norm {norm:.2f} disagrees")
    s = spread([r.get("value") for r in per_round])
    if s is None:
        notes.append("fewer than 2 rounds")
    elif s > SPREAD_LIMIT:
        notes.append(f"rounds spread {s:.0%} > {SPREAD_LIMIT:.0%}")
    if notes:
        return "NOISY", f"would {'PASS' if ok else 'FAIL'}; " + "; ".join(notes)
    return ("PASS" if ok else "FAIL"), (f"spread {s:.0%}" if s is not None else "")


def fmt_value(case, value) -> str:
    if value is None:
        return "-"
    if case.kind == "self":
        return f"{value:.2%}"
    return f"{value:.2f}"


def fmt_target(case) -> str:
    if case.target is None:
        return "-"
    op = ">=" if case.at_least else "<="
    if case.kind == "self":
        return f"{op}{case.target:.0%}"
    return f"{op}{case.target}"
