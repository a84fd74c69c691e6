"""A problem found in a scenario file, located for a marketer's editor."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong in one scenario file: `FILE:LINE:COL: step ID: message` (1-based)."""

    path: str
    line: int
    col: int
    step_id: str | None
    message: str

    def __str__(self) -> str:
        where = f"step {self.step_id}: " if self.step_id is not None else ""
        return f"{self.path}:{self.line}:{self.col}: {where}{self.message}"

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.path, self.line, self.col, self.step_id or "", self.message)

    def __lt__(self, other: "Problem") -> bool:
        return self.sort_key() < other.sort_key()
