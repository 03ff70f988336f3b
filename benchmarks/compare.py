"""Side-by-side trace overhead: our nnsight vs the peer (PyPI nnsight 0.8.1).

    python benchmarks/compare.py                       # full run, both sides, exit 1 on a miss
    python benchmarks/compare.py --quick               # 2 rounds, fewer iterations
    python benchmarks/compare.py --cases mlp64,gpt2_generate --rounds 3
    python benchmarks/compare.py --sides peer          # only the peer (no ratios, exit 0)
    python benchmarks/compare.py --markdown            # also print the docs/performance.md table
    python benchmarks/compare.py --plots docs/img      # draw the pictures (matplotlib in our venv)

For every round and every group of cases (mlp64, mlp512, gpt2, cold, import) it runs
`measure.py` in a fresh subprocess for ours, then for the peer (A B A B ...). Each worker times
its cases interleaved with their baseline (the bare forward in the same process), so

    overhead = median(trace) - median(bare forward), same interpreter, same round
               (estimated as the median over interleaved blocks of the per-block difference)

and the figure per side is the median over rounds. ratio = ours overhead / peer overhead;
a case with a target PASSes when ratio <= target (other kinds of target: `cases.Case.kind`).
`norm` is the same ratio after dividing each side's overhead by its own bare-forward time.
A verdict is NOISY, neither PASS nor FAIL, when ratio and norm fall on different sides of
the target or the per-round values spread more than 25 % ((max - min) / median; verdict.py).
Exit status: 1 on a FAIL, else 2 on a NOISY verdict, else 0.
The generate case also FAILs when our generated tokens differ from plain HF `generate`.

Workers run from a temporary directory; the peer's with PYTHONPATH removed (so its interpreter
never picks up this checkout's `nnsight/` package), ours with PYTHONPATH = this checkout
(`--ours-tree`). `vllm` runs `vllm.py` for ours only (with against without nnsight). Before each worker the driver waits (up to
--idle-wait seconds) for the machine to be idle: it has 2 cores and other jobs skew timings.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import cases as C  # noqa: E402  (imports neither torch nor nnsight at module level)
import verdict as V  # noqa: E402

OURS_DEFAULT = Path.home() / ".cache" / "nnsight-dev" / "venv311" / "bin" / "python"
GROUP_ORDER = ["mlp64", "mlp512", "gpt2", "gpt2s", "mem", "cold", "import", "vllm"]
OURS_ONLY = {"vllm"}  # groups measured against ours without nnsight, not against the peer
GEN_TOKENS = C.GEN_TOKENS


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def peer_python() -> str:
    for cand in (Path("/work/shared/peer/setup.sh"), REPO.parent / "shared" / "peer" / "setup.sh"):
        if cand.exists():
            # From a neutral directory: setup.sh's `python -c "import nnsight"` check must not
            # see this checkout's nnsight/ (it would fail there and trigger a reinstall).
            out = subprocess.run(["bash", str(cand)], capture_output=True, text=True, cwd=tempfile.gettempdir())
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[-1]
            raise SystemExit(f"peer setup failed:\n{out.stderr[-2000:]}")
    raise SystemExit("cannot find shared/peer/setup.sh; pass --peer PY")


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONWARNINGS"] = "ignore"
    env["TOKENIZERS_PARALLELISM"] = "false"
    env.update(extra or {})
    return env


def cpu_busy(interval=0.5):
    """Fraction of all CPUs busy over `interval` seconds (from /proc/stat), or None."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v), idle
    try:
        t0, i0 = snap()
        time.sleep(interval)
        t1, i1 = snap()
        return 1.0 - (i1 - i0) / max(1, t1 - t0)
    except OSError:
        return None


def wait_idle(max_wait: float, threshold=0.25):
    """Wait until others use less than `threshold` of the machine; return the last busy fraction."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    while busy is not None and busy > threshold and time.monotonic() < deadline:
        time.sleep(2)
        busy = cpu_busy()
    return busy


def run_worker(py, names, args, seed, env, cwd, group=None):
    script = "vllm.py" if group == "vllm" else "measure.py"
    cmd = [py, str(HERE / script), "--case", ",".join(names), "--json", "--seed", str(seed),
           "--rounds", str(args.vllm_rounds),
           "--scale", str(args.scale), "--threads", str(args.threads),
           "--cold-sites", str(args.cold_sites), "--import-samples", str(args.import_samples)]
    if args.cpu is not None:
        cmd += ["--cpu", str(args.cpu)]
    busy = wait_idle(args.idle_wait)
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {n: {"error": f"worker timed out after {args.timeout}s"} for n in names}, None, busy
    wall = time.monotonic() - t0
    data = None
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            try:
                data = json.loads(line)
                break
            except json.JSONDecodeError:
                pass
    if data is None:
        msg = f"worker exited {p.returncode}: {p.stderr.strip()[-1500:]}"
        return {n: {"error": msg} for n in names}, None, busy
    meta = data["meta"]
    meta["wall_s"] = round(wall, 1)
    meta["busy_before"] = busy
    meta["group"] = group
    return data["cases"], meta, busy


def entry_of(r):
    """Reduce one worker's result for one case to the numbers the summary needs."""
    if r.get("error"):
        return {"error": r["error"]}
    ov = r.get("paired_overhead_ns")
    if ov is None:
        ov = r.get("overhead_ns")
    return {"median": r.get("median_ns"), "base": r.get("baseline_median_ns"), "overhead": ov,
            "n": len(r.get("times_ns") or []), "extra": r.get("extra") or {}}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(entries):
    ok = [e for e in entries if "error" not in e]
    if not ok:
        return {"error": entries[0]["error"] if entries else "not run"}
    s = {"median": med([e["median"] for e in ok]), "base": med([e["base"] for e in ok]),
         "overhead": med([e["overhead"] for e in ok]), "rounds": len(ok),
         "round_overheads": [e["overhead"] for e in ok], "extras": [e["extra"] for e in ok],
         "per_round": [{k: e.get(k) for k in ("median", "base", "overhead", "extra")} for e in ok]}
    if len(ok) < len(entries):
        s["partial_error"] = next(e["error"] for e in entries if "error" in e)
    return s


def fmt_us(ns, width=9):
    if ns is None:
        return "-".rjust(width)
    v = ns / 1e3
    if abs(v) >= 100000:
        return f"{v / 1e3:{width - 2}.0f}ms"
    return f"{v:{width}.1f}"


def first_line(err):
    return (err or "").strip().splitlines()[0][:120] if err else ""


def judge(case, ours, peer, sides, versus=None):
    """(value, norm, status, note, per_round): see verdict.py for NOISY."""
    note = ""
    if case.name == "gpt2_generate" and "error" not in ours and "ours" in sides:
        bad = [x for x in ours["extras"] if not x.get("generate_tokens_equal")]
        steps = [x.get("generate_steps_saved") for x in ours["extras"]]
        if bad:
            return None, None, "FAIL", f"tokens differ from HF generate: {bad[0].get('generate_tokens')} vs {bad[0].get('hf_generate_tokens')}", []
        if any(s != GEN_TOKENS for s in steps):
            return None, None, "FAIL", f"iter[:] saved {steps} steps, expected {GEN_TOKENS}", []
        note = "tokens == HF"
    needs_peer = case.kind == "peer"
    if "ours" not in sides or (needs_peer and "peer" not in sides):
        only = ours if "ours" in sides else peer
        return None, None, "info", "one side only" + (
            "; error: " + first_line(only["error"]) if "error" in only else ""), []
    if "error" in ours:
        return None, None, ("FAIL" if case.target else "error"), "ours: " + first_line(ours["error"]), []
    if needs_peer and "error" in peer:
        return None, None, "n/a", "peer: " + first_line(peer["error"]), []
    if versus is not None and "error" in versus:
        return None, None, "error", f"{case.versus}: " + first_line(versus["error"]), []
    per_round = V.round_values(case, ours, peer if needs_peer else {}, versus)
    value, norm = V.overall(case, ours, peer if needs_peer else {}, versus)
    if case.target is None or value is None:
        return value, norm, "info", note, per_round
    status, why = V.decide(case, value, norm, per_round)
    note = "; ".join(x for x in (note, why) if x)
    return value, norm, status, note, per_round


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", default=str(OURS_DEFAULT), help="our venv's python")
    ap.add_argument("--ours-tree", default=str(REPO),
                    help="checkout whose nnsight/compiler/runtime the ours side imports (PYTHONPATH for ours only; "
                         "default: this checkout; 'installed' = whatever --ours imports by itself)")
    ap.add_argument("--peer", default=None, help="peer venv's python (default: shared/peer/setup.sh)")
    ap.add_argument("--sides", default="ours,peer", help="ours,peer | ours | peer")
    ap.add_argument("--cases", default="all", help="comma list of cases and/or groups (measure.py --list)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply per-case iteration counts")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpu", default="auto",
                    help="pin both sides' workers to this CPU: 'auto' = the first one this process may use "
                         "(the CPUs of a shared machine can differ in speed by 1.5x), 'none' = no pinning")
    ap.add_argument("--cold-procs", type=int, default=2, help="fresh processes per side per round for cold cases")
    ap.add_argument("--cold-sites", type=int, default=20)
    ap.add_argument("--import-samples", type=int, default=5)
    ap.add_argument("--idle-wait", type=float, default=15, help="max seconds to wait for an idle machine per worker")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per worker")
    ap.add_argument("--quick", action="store_true", help="2 rounds, 0.3x iterations, fewer cold samples")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table too")
    ap.add_argument("--json-out", default=None, help="write raw results here (every round's numbers too)")
    ap.add_argument("--plots", default=None, metavar="DIR",
                    help="draw overhead against saves and the per-case ratios into DIR (matplotlib)")
    ap.add_argument("--label", default="", help="a note for the plots' titles (e.g. 'noisy machine')")
    ap.add_argument("--vllm-rounds", type=int, default=5, help="rounds inside the vllm worker")
    args = ap.parse_args(argv)
    if args.cpu == "none" or not hasattr(os, "sched_getaffinity"):
        args.cpu = None
    elif args.cpu == "auto":
        args.cpu = min(os.sched_getaffinity(0))
    else:
        args.cpu = int(args.cpu)
    if args.quick:
        args.rounds = min(args.rounds, 2)
        args.scale = min(args.scale, 0.3)
        args.cold_procs, args.cold_sites, args.import_samples = 1, 8, 2
        args.vllm_rounds = min(args.vllm_rounds, 3)

    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    pys = {}
    if "ours" in sides:
        pys["ours"] = args.ours
    if "peer" in sides:
        pys["peer"] = args.peer or peer_python()

    # names, grouped, in a fixed order
    names = C.expand(args.cases)
    groups = {g: [n for n in names if C.CASES[n].group == g and not C.CASES[n].derived] for g in GROUP_ORDER}
    groups = {g: ns for g, ns in groups.items() if ns}

    env_extra = {}
    if "gpt2" in groups:
        for py in pys.values():  # one model directory shared by both sides
            p = subprocess.run([py, str(HERE / "tiny_gpt2.py")], capture_output=True, text=True,
                               env=clean_env(), cwd=tempfile.gettempdir())
            if p.returncode == 0 and p.stdout.strip():
                env_extra["NNSIGHT_BENCH_GPT2"] = p.stdout.strip().splitlines()[-1]
                break
        else:
            log("could not build the tiny GPT-2; gpt2 cases will error")
    env = clean_env(env_extra)
    env_ours = dict(env)
    if args.ours_tree != "installed":
        env_ours["PYTHONPATH"] = str(Path(args.ours_tree).resolve())
    cwd = tempfile.mkdtemp(prefix="nnsight-bench-")

    entries = {side: {n: [] for n in names if not C.CASES[n].derived} for side in pys}
    metas = {side: [] for side in pys}
    t_start = time.monotonic()
    for r in range(args.rounds):
        for g, gnames in groups.items():
            procs = args.cold_procs if g == "cold" else 1
            if g == "vllm" and r > 0:
                continue  # one worker: it alternates plain and nnsight rounds itself
            for k in range(procs):
                for side, py in pys.items():
                    if g in OURS_ONLY and side != "ours":
                        for n in gnames:
                            entries[side][n].append({"error": "not measured for this side (ours only)"})
                        continue
                    res, meta, busy = run_worker(py, gnames, args, seed=r * 100 + k, cwd=cwd, group=g,
                                                 env=env_ours if side == "ours" else env)
                    if meta:
                        metas[side].append(meta)
                    for n in gnames:
                        entries[side][n].append(entry_of(res.get(n, {"error": "missing from worker output"})))
                    b = f"{busy:.0%}" if busy is not None else "?"
                    log(f"[round {r + 1}/{args.rounds}] {g:6s} {side:4s} busy-before={b:>4s} "
                        f"wall={meta['wall_s'] if meta else '-'}s  ({time.monotonic() - t_start:.0f}s elapsed)")

    summary = {side: {n: summarize(entries[side][n]) for n in entries[side]} for side in pys}
    rows = []
    for n in names:
        case = C.CASES[n]
        o = summary.get("ours", {}).get(n, {"error": "not run"})
        p = summary.get("peer", {}).get(n, {"error": "not run"})
        if case.derived:  # computed from other rows of ours
            o = summary.get("ours", {}).get(case.needs[0], {"error": "not run"})
            p = {"error": "not run"}
        vs = summary.get("ours", {}).get(case.versus or (case.needs[1] if len(case.needs) > 1 else ""), None)
        ratio, norm, status, note, per_round = judge(case, o, p, sides, vs if case.kind == "vs" else None)
        rows.append(dict(case=n, kind=case.kind, target=case.target, at_least=case.at_least,
                         baseline=case.baseline, ours=o, peer=p, ratio=ratio, norm=norm, status=status,
                         note=note or case.note, per_round=per_round))

    # ---- text report: one line per case, ending with ratio and status
    def cell(s, key):
        if "error" in s:
            return ("-" if s["error"] == "not run" else "err").rjust(9)
        return fmt_us(s.get(key))

    print(f"\n{'case':20s} {'peer bare':>9s} {'peer':>9s} {'peer ovh':>9s} {'ours bare':>9s} {'ours':>9s} "
          f"{'ours ovh':>9s}   (us)  ratio   norm  target status")
    for row in rows:
        o, p = row["ours"], row["peer"]
        case = C.CASES[row["case"]]
        rt = V.fmt_value(case, row["ratio"])
        nm = "-" if row["norm"] is None else f"{row['norm']:.2f}"
        tg = V.fmt_target(case)
        print(f"{row['case']:20s} {cell(p, 'base')} {cell(p, 'median')} {cell(p, 'overhead')} "
              f"{cell(o, 'base')} {cell(o, 'median')} {cell(o, 'overhead')}         {rt:>5s} {nm:>6s} "
              f"{tg:>7s} {row['status']}" + (f"  # {row['note']}" if row["note"] else ""))
    for side, s in summary.items():
        for n, v in s.items():
            if "error" in v and C.CASES[n].target and (side == "ours" or C.CASES[n].group not in OURS_ONLY):
                log(f"\n{side} {n} error:\n{v['error']}")
    if "gpt2_remote_local" in names:
        for side in summary:
            v = summary[side]["gpt2_remote_local"]
            pb = next((x.get("payload_bytes") for x in v.get("extras", []) if x.get("payload_bytes")), None)
            print(f"remote='local' payload ({side}): {pb if pb is not None else 'n/a'}")

    for g in ("mlp64", "mlp512", "gpt2", "gpt2s"):
        key = f"{g}_bare_after_vs_before_import"
        vals = {side: med([m.get(key) for m in ms]) for side, ms in metas.items()}
        if any(v is not None for v in vals.values()):
            print(f"bare forward after/before `import nnsight` ({g}): "
                  + ", ".join(f"{side} {v:.2f}" if v is not None else f"{side} -" for side, v in vals.items())
                  + "  (>1.1 would mean the package slows plain torch forwards)")

    fallbacks = {}
    for m in metas.get("ours", []):
        for name, n in (m.get("fast_path_fallbacks") or {}).items():
            fallbacks[name] = fallbacks.get(name, 0) + n
    print("fast-path fallbacks (ours, all workers): "
          + (", ".join(f"{k}={v}" for k, v in sorted(fallbacks.items()) if v) or "none"))

    fails = [r["case"] for r in rows if r["status"] == "FAIL"]
    noisy = [r["case"] for r in rows if r["status"] == "NOISY"]
    passes = [r["case"] for r in rows if r["status"] == "PASS"]
    versions = {side: (m[0].get("nnsight_version"), m[0].get("nnsight_file")) for side, m in metas.items() if m}
    busy = [m.get("busy_before") for ms in metas.values() for m in ms if m.get("busy_before") is not None]
    print(f"\nsummary: {len(passes)} PASS, {len(fails)} FAIL"
          + (f" ({', '.join(fails)})" if fails else "")
          + f", {len(noisy)} NOISY (spread > {V.SPREAD_LIMIT:.0%} or norm disagrees: re-run)"
          + (f" ({', '.join(noisy)})" if noisy else "")
          + f"; rounds={args.rounds}; cpu={args.cpu}; versions={versions}; "
          f"median CPU busy before workers={med(busy) if busy else 'n/a'}")

    if args.markdown:
        print()
        print(markdown(rows, args, metas))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "summary": summary, "metas": metas, "entries": entries,
                       "fast_path_fallbacks": fallbacks, "spread_limit": V.SPREAD_LIMIT}, f, default=str)
    if args.plots:
        import plots

        for path in plots.draw_anywhere(rows, summary, args.plots, label=args.label,
                                        busy=med(busy) if busy else None, python=args.ours):
            log(f"plot: {path}")
    return 1 if fails else (2 if noisy else 0)


def markdown(rows, args, metas):
    def cell(s, key):
        if "error" in s:
            return "pending" if s["error"] == "not run" else "error"
        v = s.get(key)
        return "-" if v is None else f"{v / 1e3:,.1f}"

    peer_v = next((m[0].get("nnsight_version") for side, m in metas.items() if side == "peer" and m), "?")
    ours_v = next((m[0].get("nnsight_version") for side, m in metas.items() if side == "ours" and m), "pending")
    lines = [f"Measured {datetime.date.today().isoformat()}, {args.rounds} rounds, torch threads={args.threads}; "
             f"peer nnsight {peer_v}, ours {ours_v}. Times in µs (medians); ovh = trace − bare forward.",
             "",
             "| case | peer bare | peer trace | peer ovh | ours bare | ours trace | ours ovh | ratio | target | status |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        o, p = r["ours"], r["peer"]
        case = C.CASES[r["case"]]
        rt = V.fmt_value(case, r["ratio"])
        tg = V.fmt_target(case).replace("<=", "≤ ").replace(">=", "≥ ")
        st = r["status"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(f"| `{r['case']}` | {cell(p, 'base')} | {cell(p, 'median')} | {cell(p, 'overhead')} | "
                     f"{cell(o, 'base')} | {cell(o, 'median')} | {cell(o, 'overhead')} | {rt} | {tg} | {st} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
