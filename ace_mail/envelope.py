# -*- test-case-name: tests.test_queue -*-
"""
The value objects that every part of the outgoing path shares.
"""

from __future__ import annotations

import io
from typing import BinaryIO, Iterable, Mapping, Protocol

from attrs import field, frozen


def _addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """
    Convert addresses to a tuple; a typed converter, which mypy's attrs
    plugin needs to check the callers.
    """
    return tuple(addresses)


@frozen
class Envelope:
    """
    Where a message goes: the SMTP envelope and the route it leaves on.

    @ivar sender: The MAIL FROM address; C{""} is the null sender of a bounce.
    @ivar recipients: The RCPT TO addresses, in order, at least one.
    @ivar route: The name of the route the message leaves on.
    """

    sender: str
    recipients: tuple[str, ...] = field(converter=_addresses)
    route: str = "outgoing"


@frozen
class Reply:
    """
    One SMTP reply, or a local stand-in for one.

    @ivar code: The three-digit reply code; local failures such as a refused
        connection or a timeout use 421 (temporary) so that they read like
        the reply a server would have given.
    @ivar text: The reply text, multi-line replies joined with newlines.
    """

    code: int
    text: str

    @property
    def isTemporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def isPermanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@frozen
class Outcome:
    """
    What one delivery attempt of one message achieved.

    @ivar server: The name of the server that ended the attempt (for example
        C{"outgoing/2 smtp2.example.com:25"}), or C{""} if none was reached.
    @ivar reply: The reply that ended the attempt.
    @ivar accepted: The recipients that the server accepted the message for.
    @ivar refused: Each recipient that was not accepted, with its reply; a
        temporary reply means "try again", a permanent one means "bounce".
    """

    server: str
    reply: Reply
    accepted: tuple[str, ...] = field(converter=_addresses, default=())
    refused: Mapping[str, Reply] = field(factory=dict)


class MessageSource(Protocol):
    """
    A stored message that can be read from the start as often as needed.
    """

    @property
    def size(self) -> int:
        """
        The message's length in bytes.
        """

    def open(self) -> BinaryIO:
        """
        @return: A new binary file positioned at the first byte of the
            message; it reads C{size} bytes and then end of file.
        """


@frozen
class BytesSource:
    """
    A L{MessageSource} over bytes held in memory.
    """

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)
