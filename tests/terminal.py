"""A fake terminal for progress-bar tests: a stream that says it is a tty, and what a
terminal would show after the control sequences written to it."""

from __future__ import annotations

import io
import re

_TOKEN = re.compile(r"\x1b\[(\??)(\d*)([A-Za-z])|\r|\n|[^\x1b\r\n]")


class Terminal(io.StringIO):
    """A stream that reports being a terminal; ``screen()`` replays what was written."""

    def isatty(self) -> bool:
        return True

    def screen(self) -> list[str]:
        """The rows a terminal shows at the end (carriage returns, line erases and cursor
        moves up applied; colours dropped), trailing blank rows removed."""
        return replay(self.getvalue())[0]

    def cursor_shown(self) -> bool:
        return replay(self.getvalue())[1]


def replay(data: str) -> tuple[list[str], bool]:
    rows: list[list[str]] = [[]]
    y = x = 0
    cursor = True
    for match in _TOKEN.finditer(data):
        char = match.group(0)
        if match.group(3):
            private, number, command = match.groups()
            if private and number == "25":
                cursor = command == "h"
            elif command == "A":
                y = max(0, y - int(number or 1))
            elif command == "K":
                rows[y] = rows[y][:x] if number in ("", "0") else []
            continue
        if char == "\r":
            x = 0
        elif char == "\n":
            y, x = y + 1, 0
            while len(rows) <= y:
                rows.append([])
        else:
            row = rows[y]
            row.extend(" " * (x - len(row)))
            if x < len(row):
                row[x] = char
            else:
                row.append(char)
            x += 1
    shown = ["".join(row).rstrip() for row in rows]
    while shown and not shown[-1]:
        shown.pop()
    return shown, cursor
