"""Where a message's header ends, by the line ends the wire reads (RFC 5322 §2.1).

A header ends at the first line end whose next line neither folds (white space
first, §2.2.3) nor starts a field (a name and its colon): the empty line before the
body, or a line that is no field, which :mod:`email`'s parser and Postfix's cleanup
take as the body's first (a script's mail often has no empty line). A POP3 server
sends a stored bare CR or bare LF as CR LF (RFC 1939 §3), so CR LF, CR alone and LF
alone are each a line end, in any mix. Every reader of a header (the UTF-8 scan, the
POP3 surrogate, the SMTP envelope) finds its end by this one rule, so that what one
takes for header another never takes for body.

:func:`header_end` reads a whole message with one search; :class:`HeaderEndScan`
finds the same end in chunks, holding a few words of state (a property test holds
the two equal over every split).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["FIELD_NAME", "HeaderEndScan", "header_end"]

FIELD_NAME: Final = re.compile(rb"([!-9;-~]+)[ \t]*:")
"""A field name and its colon, with the white space before the colon the obsolete
syntax allows (RFC 5322 §4.5.3, ``Bcc :``). Only ever matched at the start of a line:
a folded line starts with white space, which no name holds."""

_HEADER_END: Final = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?![ \t]|" + FIELD_NAME.pattern + rb")")
"""A line end whose next line neither folds nor starts a field. One search, tried
only at line ends, each look as long as a field name: linear."""

_NAME: Final = re.compile(rb"[!-9;-~]*")
_BLANKS: Final = re.compile(rb"[ \t]*")
_LINE_END: Final = re.compile(rb"[\r\n]")


def header_end(message: bytes, start: int = 0, limit: int | None = None) -> int:
    """Where the header that starts at ``start`` of ``message`` ends, after its last
    line end, only ``message[:limit]`` read: ``start`` where its first line is no
    field (an empty line included), the end of what was read where it has not ended."""
    stop = len(message) if limit is None else min(limit, len(message))
    if FIELD_NAME.match(message, start, stop) is None:
        return start
    found = _HEADER_END.search(message, start, stop)
    return stop if found is None else found.end()


class HeaderEndScan:
    """:func:`header_end` of a message read in chunks: the same end whatever the
    split. It keeps only where the last line end was and how much of the next line
    it has read: a name, then blanks, are all it waits on before it can tell."""

    __slots__ = ("_at", "_candidate", "_mode")

    def __init__(self) -> None:
        self._at = 0  # octets read before the current chunk
        self._candidate = 0  # where the header ends if the line after it is no field
        self._mode = "first"  # "line", "cr" (a CR a chunk ended on), "start", "name", "blanks"

    def feed(self, chunk: bytes) -> int | None:
        """Read the next ``chunk``; the header's end (an offset in the whole
        message, perhaps in an earlier chunk) once known, else None."""
        pos, size = 0, len(chunk)
        while pos < size:
            mode = self._mode
            if mode == "line":
                pos = _last_undecided_line_end(chunk, pos)
                found = _LINE_END.search(chunk, pos)
                if found is None:
                    break
                pos = found.end()
                if chunk[found.start()] == 0x0D:
                    if pos == size:
                        self._mode, self._candidate = "cr", self._at + pos
                        break
                    pos += chunk[pos] == 0x0A
                self._mode, self._candidate = "start", self._at + pos
            elif mode == "cr":
                if chunk[pos] == 0x0A:
                    pos += 1
                    self._candidate += 1
                self._mode = "start"
            elif mode in ("start", "first"):
                octet = chunk[pos]
                if octet in (0x20, 0x09) and mode == "start":  # a fold, but not of nothing
                    self._mode = "line"
                elif _run(_NAME, chunk, pos) > pos:
                    self._mode = "name"
                else:
                    return self._candidate
            else:
                pattern = _NAME if mode == "name" else _BLANKS
                pos = _run(pattern, chunk, pos)
                if pos == size:
                    break
                if chunk[pos] == 0x3A:
                    self._mode = "line"
                elif mode == "name" and chunk[pos] in (0x20, 0x09):
                    self._mode = "blanks"
                else:
                    return self._candidate
        self._at += size
        return None

    def end(self) -> int:
        """The header's end once the message has ended: all of it where it had not,
        except a last line begun as a name with no colon, which is no field."""
        return self._candidate if self._mode in ("name", "blanks", "first") else self._at


def _last_undecided_line_end(chunk: bytes, pos: int) -> int:
    """Where, from ``pos`` in the middle of a line, the line end that needs a look
    starts: the first whose next line :data:`_HEADER_END` finds neither folds nor
    starts a field (which the chunk may have cut short), else the chunk's last line
    end. Every line end before it is followed by a field or a fold, so one search in
    C steps over them, as :func:`header_end` does, where a look at each would cost
    a pass of the loop a line (a header of short lines: 87,000 of them in 256 KiB)."""
    found = _HEADER_END.search(chunk, pos)
    if found is not None:
        return found.start()
    last = max(chunk.rfind(b"\n", pos), chunk.rfind(b"\r", pos))
    if last > pos and chunk[last] == 0x0A and chunk[last - 1] == 0x0D:
        last -= 1  # the CR of a CR LF: one line end, read whole
    return max(last, pos)


def _run(pattern: re.Pattern[bytes], chunk: bytes, pos: int) -> int:
    """Where ``pattern``'s run of octets (which may be empty) from ``pos`` stops."""
    found = pattern.match(chunk, pos)
    return pos if found is None else found.end()
