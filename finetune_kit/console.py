"""Messages and tables on the terminal, readable in a log file too.

rich lays text out for a width: the terminal's, else ``COLUMNS``, else 80 columns, also when the
output is a file or a pipe. Broken at that width, a message in ``finetune-kit train ... 2>log``
would be cut mid-sentence (a long model path pushes the rest onto the next line). So messages
are never broken: a terminal wraps long lines itself, and a log keeps each message on one line.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def message_console(stderr: bool = False, quiet: bool = False) -> Console:
    """A console that never breaks a printed line (``soft_wrap``) and leaves ``:name:`` as written
    (no emoji codes in paths, labels or texts)."""
    return Console(stderr=stderr, quiet=quiet, soft_wrap=True, emoji=False)


def print_table(table: Table) -> None:
    """Print a table on standard output at the terminal's width; where the output is no terminal
    (a file or a pipe, where rich would assume 80 columns) at the table's full width, so that no
    cell is cut or folded."""
    console = message_console()
    if not console.is_terminal:
        console.width = console.measure(table, options=console.options.update_width(10_000)).maximum
    console.print(table, soft_wrap=False)
