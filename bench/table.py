"""Tables as text: one summary row a line, aligned columns, the first left-aligned."""

from __future__ import annotations

#: One summary row: the target's name, its medians and ratios, errors, rounds, failure.
Row = dict[str, object]


def fmt(value: object, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def render(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


def target_cell(row: Row) -> str:
    return str(row["target"]) + (" (FAILED)" if row["failure"] else "")
