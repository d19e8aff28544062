"""A Markdown page written in order, and the sections that write onto it."""

from __future__ import annotations

from typing import Generic, TypeVar


class Page:
    """The lines of a report so far."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.add("| " + " | ".join(header) + " |", "|" + "---|" * len(header))
        self.add(*("| " + " | ".join(row) + " |" for row in rows))
        self.add("")


DataT = TypeVar("DataT")
PageT = TypeVar("PageT", bound=Page)


class Section(Generic[DataT, PageT]):
    """One part of a report: what it reads (the study's saved data), the
    page it writes onto, and the note on the load tool's bias that follows
    every latency table."""

    def __init__(self, data: DataT, page: PageT, tool_note: str) -> None:
        self.data = data
        self.page = page
        self.tool_note = tool_note
        self.add = page.add
        self.table = page.table
