# -*- test-case-name: tests.test_accounts_listing -*-
"""
Checking what a POP3 server says about its mailbox: STAT, UIDL and LIST.
"""

from __future__ import annotations

import re
from typing import Sequence

from attrs import frozen

from ._protocol import POP3Error, quote

MAX_UID_LENGTH = 70
"""
The longest unique-id RFC 1939 allows.
"""

_NUMBER = re.compile(rb"[0-9]{1,20}")
_UID = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_UID_LENGTH)


@frozen
class MessageInfo:
    """
    One message in the mailbox.

    @ivar index: Its message number in this session, from 1.
    @ivar uid: Its unique-id, 1 to 70 printable ASCII characters.
    @ivar size: Its size in octets, as LIST gives it.
    """

    index: int
    uid: str
    size: int


def parseStat(peer: str, text: str) -> int:
    """
    @param text: The text of the C{+OK} answer to STAT.
    @return: The number of messages.
    @raise POP3Error: When the answer is not two numbers.
    """
    fields = text.split(" ")
    if len(fields) < 2 or not all(_NUMBER.fullmatch(f.encode()) for f in fields[:2]):
        raise POP3Error(f"{peer} answered STAT with {text!r}, not a count and a size")
    return int(fields[0])


def parseMailbox(
    peer: str, count: int, uidLines: Sequence[bytes], sizeLines: Sequence[bytes]
) -> list[MessageInfo]:
    """
    Check the listings of UIDL and LIST against each other and the count.

    @param count: The number of messages, from STAT.
    @param uidLines: The lines of the answer to UIDL.
    @param sizeLines: The lines of the answer to LIST.
    @return: The messages in index order.
    @raise POP3Error: When an index is not between 1 and C{count} or comes
        twice, a unique-id is not 1 to 70 printable ASCII characters, has
        C{"/"} or C{".."} (ace-mail never makes a path of it, but such an
        id is not to be trusted) or comes twice, or the two listings name different messages.
    """
    uids = _pairs(peer, "UIDL", count, uidLines)
    sizes = _pairs(peer, "LIST", count, sizeLines)

    seen: set[bytes] = set()
    for index, uid in uids.items():
        if not _UID.fullmatch(uid) or b"/" in uid or b".." in uid:
            raise POP3Error(
                f"{peer} gave message {index} the unique-id {quote(uid, 80)!r};"
                f" expected 1 to {MAX_UID_LENGTH} printable ASCII characters"
                ' without "/" or ".."'
            )
        if uid in seen:
            raise POP3Error(f"{peer} gave the unique-id {quote(uid)!r} twice")
        seen.add(uid)
        if not _NUMBER.fullmatch(sizes.get(index, b"")):
            raise POP3Error(f"{peer} gave no size for message {index} in LIST")
    if set(sizes) != set(uids):
        raise POP3Error(f"{peer} listed different messages in UIDL and LIST")

    return [
        MessageInfo(index, uids[index].decode("ascii"), int(sizes[index]))
        for index in sorted(uids)
    ]


def _pairs(
    peer: str, command: str, count: int, lines: Sequence[bytes]
) -> dict[int, bytes]:
    """
    Split each line of a listing into its message number and the rest.
    """
    pairs: dict[int, bytes] = {}
    for line in lines:
        number, _, rest = line.partition(b" ")
        if not _NUMBER.fullmatch(number) or not 1 <= int(number) <= count:
            raise POP3Error(
                f"{peer} listed {quote(line)!r} in {command}; expected a message"
                f" number from 1 to {count}"
            )
        index = int(number)
        if index in pairs:
            raise POP3Error(f"{peer} listed message {index} twice in {command}")
        pairs[index] = rest
    return pairs
