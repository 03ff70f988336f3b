"""Plain-text tables for the demo's output."""
from typing import List, Sequence


def table(headers: Sequence[str], rows: List[Sequence[object]], title: str = "") -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(row):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    out = [title] if title else []
    out += [line, fmt(cells[0]), line] + [fmt(r) for r in cells[1:]] + [line]
    return "\n".join(out)
