"""Rich tables for people, shared by every `coe` listing: names and ids always show whole.

Rich's default squeezes the widest columns with an ellipsis when a table is wider than the terminal,
which cut `local-general` to `local…` in an 80-column terminal. Here the key columns (the first `keys`,
names and ids) never wrap and never shrink below their longest value (a value longer than half the
terminal folds onto a second line, still whole); the other columns fold instead of truncating, and the
`optional` ones are dropped, last first, while the table would not fit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    keys: int = 1,
    optional: Sequence[str] = (),
    console: Any = None,
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    width = console.width
    cells = [["" if v is None else str(v) for v in r] for r in rows]
    shown = list(range(len(columns)))

    def natural() -> int:  # widest line of each column + 3 for padding and the border
        return 1 + sum(
            3 + max([len(columns[i])] + [len(line) for r in cells for line in r[i].splitlines() or [""]])
            for i in shown
        )

    for name in reversed(optional):
        if natural() <= width:
            break
        if name in columns:
            shown.remove(list(columns).index(name))
    table = Table(title=title)
    for i in shown:
        if i < keys:
            longest = max([len(columns[i])] + [len(r[i]) for r in cells])
            table.add_column(columns[i], no_wrap=True, overflow="fold", min_width=min(longest, width // 2))
        else:
            table.add_column(columns[i], overflow="fold")
    for r in cells:
        table.add_row(*(r[i] for i in shown))
    console.print(table)
