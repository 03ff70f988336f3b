"""Pictures of a compare.py run (`compare.py --plots DIR`), drawn with matplotlib.

  * ``overhead_vs_saves.png``: MLP-64 trace overhead (µs) against the number of saves
    (0, 1, 2, 4, 8, 12) for ours, the peer, and raw torch forward hooks registered and removed
    per call (the floor a trace could reach); bars from the lowest to the highest round.
  * ``ratios.png``: every case with a target, its value against the target (1.0 = on target):
    green PASS, red FAIL, grey NOISY.

compare.py runs under any Python; when matplotlib is not importable there, the drawing runs
under our venv's interpreter (`python benchmarks/plots.py DATA.json DIR`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAVES = [0, 1, 2, 4, 8, 12]
TRACE_CASE = {0: "mlp64_empty", 1: "mlp64_save1", 2: "mlp64_save2", 4: "mlp64_save4", 8: "mlp64_save8",
              12: "mlp64_save12"}
HOOK_CASE = {1: "mlp64_hooks1_reg", 2: "mlp64_hooks2_reg", 4: "mlp64_hooks4_reg", 8: "mlp64_hooks8_reg",
             12: "mlp64_hooks12_reg"}
COLORS = {"PASS": "#2e7d32", "FAIL": "#c62828", "NOISY": "#9e9e9e"}


def draw_anywhere(rows, summary, out_dir, label="", busy=None, python=None):
    """Draw here if matplotlib imports, else under `python`; return the files written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        data = {"rows": rows, "summary": summary, "label": label, "busy": busy}
        fd, path = tempfile.mkstemp(suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, default=str)
        p = subprocess.run([python or sys.executable, str(HERE / "plots.py"), path, str(out_dir)],
                           capture_output=True, text=True)
        os.unlink(path)
        if p.returncode:
            raise SystemExit(f"plots failed under {python}: {p.stderr[-1500:]}")
        return p.stdout.split()
    return draw(rows, summary, out_dir, label, busy)


def _stats(side_summary, name):
    s = side_summary.get(name) or {}
    if "error" in s or s.get("overhead") is None:
        return None
    rounds = [x for x in s.get("round_overheads", []) if x is not None] or [s["overhead"]]
    return s["overhead"] / 1e3, min(rounds) / 1e3, max(rounds) / 1e3


def _title(text, label, busy):
    extra = [x for x in (label, f"CPU busy before workers {busy:.0%}" if busy is not None else "") if x]
    return text + (f"\n({'; '.join(extra)})" if extra else "")


def draw(rows, summary, out_dir, label="", busy=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = [("ours", "ours", TRACE_CASE, "o-"), ("peer", "peer (nnsight 0.8.1)", TRACE_CASE, "s-"),
              ("ours", "torch hooks registered per call", HOOK_CASE, "^--")]
    for side, name, table, style in series:
        xs, ys, lo, hi = [], [], [], []
        for n in SAVES:
            if n == 0 and table is HOOK_CASE:
                st = (0.0, 0.0, 0.0)  # no hooks: nothing to register
            else:
                st = _stats(summary.get(side, {}), table.get(n, ""))
            if st is None:
                continue
            xs.append(n)
            ys.append(st[0])
            lo.append(st[0] - st[1])
            hi.append(st[2] - st[0])
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt=style, capsize=3, label=name)
    ax.set_xlabel("number of saves (MLP-64, 12 blocks)")
    ax.set_ylabel("overhead over the bare forward (µs)")
    ax.set_xticks(SAVES)
    if ax.get_ylim()[0] > 0:
        ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(_title("Trace overhead against the number of saves", label, busy), fontsize=10)
    fig.tight_layout()
    path = out / "overhead_vs_saves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(str(path))

    judged = [r for r in rows if r.get("target") and r.get("ratio") is not None]
    if judged:
        fig, ax = plt.subplots(figsize=(9, 0.42 * len(judged) + 1.8))
        names, vals, colors = [], [], []
        for r in judged:
            # value / target: <= 1 meets a "<=" target; for an "at least" target, target / value
            v = r["target"] / r["ratio"] if r.get("at_least") else r["ratio"] / r["target"]
            names.append(f"{r['case']} ({'≥' if r.get('at_least') else '≤'} {r['target']})")
            vals.append(max(0.0, v))  # a negative overhead (noise) draws as no bar
            colors.append(COLORS.get(r["status"], "#9e9e9e"))
        ax.barh(range(len(vals)), vals, color=colors)
        for i, (v, r) in enumerate(zip(vals, judged)):
            shown = f"{r['ratio']:.2%}" if r.get("kind") == "self" else f"{r['ratio']:.2f}"
            ax.text(v + 0.02, i, f"{shown} {r['status']}", va="center", fontsize=8)
        ax.axvline(1.0, color="black", lw=1)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("value / target (left of the line: target met)")
        ax.set_xlim(0, max(2.0, max(vals) * 1.25))
        ax.set_title(_title("Per-case values against their targets", label, busy), fontsize=10, loc="left")
        fig.tight_layout()
        path = out / "ratios.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        data = json.load(f)
    for p in draw(data["rows"], data["summary"], sys.argv[2], data.get("label", ""), data.get("busy")):
        print(p)
