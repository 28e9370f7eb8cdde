# -*- test-case-name: tests.test_sender_encoder -*-
"""
The transparency encoding of SMTP DATA: line endings and dot-stuffing.
"""

from __future__ import annotations

CR = b"\r"
LF = b"\n"
CRLF = b"\r\n"
END_OF_DATA = b".\r\n"


class DataEncoder:
    """
    Turn a message, fed in chunks of any size, into the bytes that follow
    an SMTP DATA command (RFC 5321 section 4.5.2).

    Every bare CR, every bare LF and every CRLF becomes one CRLF; every line
    that starts with "." gets one more "." in front; and the data is closed
    with CRLF (unless it already ends with one) and ".". The result is the
    same however the message is split into chunks, because the encoder
    remembers across chunks whether a line has just started and whether the
    last chunk ended with a CR that a LF may yet follow.

    The encoder is pure: it does no I/O.
    """

    def __init__(self) -> None:
        self._atLineStart = True
        self._pendingCR = False

    def encode(self, chunk: bytes) -> bytes:
        """
        Encode the next chunk of the message.

        @param chunk: Any number of the message's bytes, following the ones
            already encoded.
        @return: The encoded bytes to send; a trailing CR is held back until
            the next chunk shows whether it is the first half of a CRLF.
        """
        if self._pendingCR:
            chunk = CR + chunk
            self._pendingCR = False

        if chunk.endswith(CR):
            chunk = chunk[:-1]
            self._pendingCR = True

        if not chunk:
            return b""

        # Every line ending becomes a LF while the dots are stuffed, and a
        # CRLF just before the result goes out.
        lines = chunk.replace(CRLF, LF).replace(CR, LF)
        stuffed = lines.replace(LF + b".", LF + b"..")
        if self._atLineStart and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        self._atLineStart = stuffed.endswith(LF)
        return stuffed.replace(LF, CRLF)

    def finish(self) -> bytes:
        """
        End the message.

        @return: The last bytes to send: a held-back CR as a line ending,
            the CRLF that ends an unfinished last line, and the final ".".
        """
        tail = b""
        if self._pendingCR:
            self._pendingCR = False
            self._atLineStart = True
            tail = CRLF
        if not self._atLineStart:
            tail += CRLF
        self._atLineStart = True
        return tail + END_OF_DATA
