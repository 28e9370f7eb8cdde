# -*- test-case-name: tests.test_proxy_data -*-
"""
The DATA phase: find the one true end of the message and write it once.
"""

from __future__ import annotations

from typing import BinaryIO

from ._policy import Refusal


class MessageReader:
    """
    Takes the bytes after C{354}, removes dot-stuffing and writes the message
    to a file, until the line that is exactly C{"."} after a CRLF.

    Lines end only at CRLF. A bare CR or LF never ends a line, so no
    sequence such as C{<LF>.<LF>} or C{<CR><LF>.<CR>} can end the message
    early (SMTP smuggling); the message that holds one is refused instead.
    So is a message with a NUL, a line longer than the limit or more bytes
    than the size limit. A refused message is read to its end all the same,
    so that its content is never taken for commands, but nothing more of it
    is written.

    @ivar size: The bytes of the message so far, after dot-unstuffing.
    @ivar refusal: Why the message will be refused, or L{None}; the first
        problem found wins.
    """

    def __init__(self, file: BinaryIO, maxSize: int, maxLineLength: int) -> None:
        """
        @param file: Where the message goes, written once, in order.
        @param maxSize: The most bytes the message may have.
        @param maxLineLength: The longest line allowed, including its CRLF.
        """
        self.size = 0
        self.refusal: Refusal | None = None
        self._file = file
        self._maxSize = maxSize
        self._maxLineLength = maxLineLength
        self._partial = b""
        self._midLine = False

    def feed(self, data: bytes) -> bytes | None:
        """
        Take more of the message.

        @return: L{None} while the message goes on; once its end is seen,
            the bytes that followed it (commands pipelined after the
            message), possibly empty.
        """
        lines = (self._partial + data).split(b"\r\n")
        self._partial = lines.pop()

        # The first piece ends a line whose start was dropped as too long.
        start = 0
        if self._midLine and lines:
            self._midLine = False
            self.size += len(lines[0]) + 2
            start = 1

        try:
            end = lines.index(b".", start)
        except ValueError:
            self._take(lines[start:])
            self._dropOverlongPartial()
            return None

        self._take(lines[start:end])
        rest = b"\r\n".join(lines[end + 1 :] + [self._partial])
        self._partial = b""
        return rest

    def _take(self, lines: list[bytes]) -> None:
        if not lines:
            return
        if self.refusal is None:
            self._check(lines)
        chunk = b"\r\n".join(lines) + b"\r\n"
        self.size += len(chunk)
        if self.refusal is None and self.size > self._maxSize:
            self._refuse(
                552,
                "5.3.4",
                f"message refused: it is larger than {self._maxSize} bytes",
                "message-too-big",
            )
        if self.refusal is None:
            self._file.write(chunk)

    def _check(self, lines: list[bytes]) -> None:
        """
        Look for refusable content and remove dot-stuffing, in place.
        """
        longest = self._maxLineLength - 2
        for index, line in enumerate(lines):
            if len(line) > longest:
                self._refuseLong()
            if b"\0" in line:
                self._refuse(
                    550,
                    "5.6.0",
                    "message refused: NUL characters are not allowed",
                    "nul",
                )
            if b"\r" in line or b"\n" in line:
                self._refuse(
                    550,
                    "5.6.2",
                    "message refused: bare CR or LF not allowed; lines end with CRLF",
                    "bare-newline",
                )
            if line[:1] == b".":
                lines[index] = line[1:]
            if self.refusal is not None:
                return

    def _dropOverlongPartial(self) -> None:
        """
        Keep no more of an unfinished line than the limit allows.
        """
        if len(self._partial) < self._maxLineLength:
            return
        self._refuseLong()
        keep = b"\r" if self._partial.endswith(b"\r") else b""
        self.size += len(self._partial) - len(keep)
        self._partial = keep
        self._midLine = True

    def _refuseLong(self) -> None:
        self._refuse(
            552,
            "5.3.4",
            f"message refused: a line is longer than {self._maxLineLength} bytes",
            "line-too-long",
        )

    def _refuse(self, code: int, status: str, text: str, reason: str) -> None:
        if self.refusal is None:
            self.refusal = Refusal(code, status, text, reason)
