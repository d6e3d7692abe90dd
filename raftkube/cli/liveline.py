"""Progress that a command prints while it waits: one line per stage.

On a terminal the line of the current stage is rewritten in place as it changes and
ended when the next stage begins; anywhere else (a pipe, a log, CI) every change is a
line of its own, so a transcript shows each step. Nothing here knows what is awaited.
"""

from __future__ import annotations

import sys
from typing import TextIO


class LiveLines:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty()
        self.stage: str | None = None
        self.line: str | None = None

    def show(self, stage: str, line: str) -> None:
        """`line` as the state of `stage`; a repeated line prints nothing."""
        if stage == self.stage and line == self.line:
            return
        if not self.tty:
            self.stream.write(line + "\n")
        elif stage == self.stage:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(("\n" if self.stage is not None else "") + line)
        self.stream.flush()
        self.stage, self.line = stage, line

    def close(self) -> None:
        """End the current line (on a terminal it was left open for rewriting)."""
        if self.tty and self.stage is not None:
            self.stream.write("\n")
            self.stream.flush()
        self.stage = self.line = None
