# -*- test-case-name: tests.test_proxy_server,tests.test_proxy_contacts -*-
"""
One mail transaction of the proxy: its recipients, and the copies it queues.
"""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO, Mapping, Protocol, Sequence

from attrs import define, field
from twisted.internet.defer import Deferred, maybeDeferred

from ..envelope import Envelope
from ..rewrite import headerEnd, rewriteHeader
from ..spool import MessageParts, Range
from ..store import Contact, Entrance, IContactStore
from ._policy import Refusal, Refused, retentionRefusal, senderRefusal, unknownContact
from ._settings import ProxySettings


class MessageQueue(Protocol):
    """
    The part of the queue that the proxy uses.
    """

    def enqueue(self, envelope: Envelope, message: MessageParts) -> Deferred[str]:
        """
        @param message: The message, its files open until the L{Deferred}
            fires or fails.
        @return: A L{Deferred} firing with the queue id once the message is
            on disk, or failing if it could not be stored.
        """

    def delete(self, queueId: str, why: str = ...) -> bool:
        """
        Drop a queued message; a delivery already under way still ends.
        """


class EnqueueFailed(Exception):
    """
    A copy could not be queued.

    @ivar stored: The queue ids of the copies stored before the failure,
        deleted again.
    """

    def __init__(self, stored: list[str]) -> None:
        super().__init__(stored)
        self.stored = stored


@define
class Transaction:
    """
    What a client said between MAIL FROM and the end of DATA.

    @ivar sender: The MAIL FROM address.
    @ivar contacts: Each contact recipient by contact id, with its entrance;
        a contact named twice gets one copy.
    @ivar passThrough: The other recipients, in order, each once.
    @ivar recipients: How many RCPT commands were accepted.
    """

    sender: str
    contacts: dict[str, tuple[Contact, Entrance]] = field(factory=dict)
    passThrough: list[str] = field(factory=list)
    recipients: int = 0

    def addContact(self, contact: Contact, entrance: Entrance) -> None:
        self.contacts[contact.id] = (contact, entrance)
        self.recipients += 1

    def addPassThrough(self, address: str) -> None:
        if address not in self.passThrough:
            self.passThrough.append(address)
        self.recipients += 1

    def copies(
        self,
        header: bytes,
        body: Range,
        route: str,
        hide: Sequence[str],
        entranceRoutes: Mapping[str, str],
    ) -> list[tuple[Envelope, MessageParts]]:
        """
        @param header: The message's header block, as L{readHeader} finds it.
        @param body: The rest of the message, left in its file.
        @param route: The route of pass-through mail, and of customers' copies
            whose entrance has no route of its own in C{entranceRoutes}.
        @param hide: The agent's addresses that the envelope shows (such as
            the sender), to keep out of the customers' copies besides those
            in the message's own headers; the pass-through recipients are
            kept out too.
        @return: One copy for each contact, its header block rewritten by
            L{rewriteHeader}, from the entrance's address to the customer;
            and one unchanged copy for all pass-through recipients with the
            envelope as given. Each copy is its header block in memory and
            the body in its file.
        @raise ace_mail.rewrite.RewriteError: When a reply cannot be
            rewritten without showing the agent.
        @raise OSError: When the body cannot be read for the Message-ID.
        """
        result = []
        if self.contacts:
            digest = hashlib.sha256(header)
            for chunk in body.chunks():
                digest.update(chunk)
            hidden = [*hide, *self.passThrough]
            for contact, entrance in self.contacts.values():
                envelope = Envelope(
                    entrance.address,
                    (contact.customerAddress,),
                    entranceRoutes.get(entrance.name, route),
                )
                rewritten = rewriteHeader(
                    header, digest, contact, entrance, hide=hidden
                )
                result.append((envelope, MessageParts((rewritten, body))))
        if self.passThrough:
            envelope = Envelope(self.sender, tuple(self.passThrough), route)
            result.append((envelope, MessageParts((header, body))))
        return result


def readHeader(file: BinaryIO) -> tuple[bytes, Range]:
    """
    Read the header block of a received message, leaving its body in the
    file.

    Reads grow twice as large each time, so that even a header block of
    many megabytes is found in a few reads, and the body is read no further
    than the read that finds its start.

    @param file: The message, written and flushed; it must stay open while
        the body is used.
    @return: The header block, up to where L{headerEnd} says the body
        starts (all of the message if it has no body), and where the body
        is in the file.
    """
    fd = file.fileno()
    size = os.fstat(fd).st_size
    data = b""
    wanted = 1 << 16
    while True:
        chunk = os.pread(fd, wanted, len(data))
        data += chunk
        if not chunk or len(data) >= size:
            size = len(data)
            end = headerEnd(data)
            break
        end = headerEnd(data[: data.rfind(b"\n") + 1])
        if end is not None:
            break
        wanted *= 2
    if end is None:
        end = size
    return data[:end], Range(fd, end, size - end)


async def lookUpContact(
    store: IContactStore,
    entrances: Mapping[str, Entrance],
    settings: ProxySettings,
    now: float,
    sender: str,
    contactId: str,
) -> tuple[Contact, Entrance]:
    """
    Find the contact that a contact address names and check that the
    sender may still answer it.

    @raise Refused: When the contact is unknown, ended too long ago, its
        entrance is not configured, or the sender's domain is not allowed.
    @raise Exception: Whatever the store fails with.
    """
    contact: Contact | None = await store.get(contactId)
    if contact is None:
        raise Refused(unknownContact(contactId))
    refusal = retentionRefusal(contact, now, settings.retentionSeconds)
    if refusal is None:
        refusal = senderRefusal(sender, contact.entrance, settings.allowedSenderDomains)
    if refusal is not None:
        raise Refused(refusal)
    entrance = entrances.get(contact.entrance)
    if entrance is None:
        raise Refused(
            Refusal(
                451,
                "4.3.5",
                f"the entrance {contact.entrance} of contact {contactId} is not "
                "configured here; try again later",
                "entrance-unknown",
            )
        )
    return contact, entrance


async def enqueueAll(
    queue: MessageQueue, copies: Sequence[tuple[Envelope, MessageParts]]
) -> list[str]:
    """
    Queue each copy in turn, the next only once the previous is on disk.

    The queue has no batch, so this is all-or-nothing only as far as the
    queue allows: when one copy fails, the copies before it are deleted
    again, but one whose delivery had already begun still goes out, and the
    client, told 451, will send the whole message again later; its
    recipient may then get it twice. A lost reply would be worse.

    @return: The queue ids, in the order of C{copies}.
    @raise EnqueueFailed: When a copy could not be stored; the cause is
        chained, and C{stored} names the copies that were deleted again.
    """
    stored: list[str] = []
    for envelope, message in copies:
        try:
            stored.append(await maybeDeferred(queue.enqueue, envelope, message))
        except Exception as e:
            for queueId in stored:
                queue.delete(
                    queueId, "because another copy of its message was not accepted"
                )
            raise EnqueueFailed(stored) from e
    return stored
