"""Reading what people write (scenario files, scoring.yaml, templates): a size limit, and UTF-8 text or a
sentence saying where it is not."""

from __future__ import annotations

from pathlib import Path


class TextFileError(ValueError):
    """A file that cannot be read as text: the message, and the 1-based line and column it is about (1, 1 for
    the file as a whole)."""

    def __init__(self, message: str, line: int = 1, col: int = 1) -> None:
        super().__init__(message)
        self.line, self.col = line, col


def size_of(count: int) -> str:
    """A size as a person reads it: 2 MB, 256.1 KB, 12 bytes."""
    for unit, size in (("MB", 1_000_000), ("KB", 1_000)):
        if count >= size:
            return f"{count // size} {unit}" if count % size == 0 else f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def too_big(count: int, limit: int, what: str) -> str:
    return f"the file is {size_of(count)}: {what} may be {size_of(limit)} at most"


def decode(data: bytes) -> str:
    """UTF-8 bytes (a leading byte-order mark is dropped) -> text; TextFileError at the first byte that is not."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[:exc.start]
        line = before.count(b"\n") + 1
        col = len(before[before.rfind(b"\n") + 1:].decode("utf-8", "replace")) + 1
        raise TextFileError(f"not UTF-8 text (byte 0x{data[exc.start]:02x} cannot be read): save the file as UTF-8",
                            line, col) from None


def read_text(path: Path, *, limit: int, what: str) -> str:
    """The text of a file of at most `limit` bytes (`what` names such a file in the message, "a template");
    TextFileError when it is bigger or not UTF-8. A bigger file is not read."""
    size = path.stat().st_size
    if size > limit:
        raise TextFileError(too_big(size, limit, what))
    with path.open("rb") as stream:
        data = stream.read(limit + 1)  # a file that grew since stat (or a device) is not read whole either
    if len(data) > limit:
        raise TextFileError(too_big(len(data), limit, what))
    return decode(data)
