# -*- test-case-name: tests.test_intakestore -*-
"""
The value objects of email intake: what arrived, what intake plans to send,
and what the store decided.
"""

from __future__ import annotations

from typing import Iterable

from attrs import field, frozen

CREATED = "created"
THREADED = "threaded"
DUPLICATE = "duplicate"
REFUSED = "refused"

ANSWER = "answer"
AGENT = "agent"

PENDING = "pending"
QUEUED = "queued"
DROPPED = "dropped"


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@frozen
class Arrival:
    """
    One message taken from a POP3 account, as intake read it.

    @ivar account: The account's name.
    @ivar uidl: The message's unique id on the POP3 server.
    @ivar digest: The SHA-256 of the message, in hexadecimal.
    @ivar messageId: Its Message-ID with angle brackets, or L{None}.
    @ivar original: The name of its stored copy in the originals directory.
    @ivar entrance: The name of the account's entrance.
    @ivar customerAddress: The customer's address (Reply-To, else From), or
        L{None} when the message names no usable one and is refused.
    @ivar customerName: The customer's display name, or C{""}.
    @ivar subject: The subject, decoded.
    @ivar references: The References of the message, in order.
    @ivar threadIds: The Message-IDs in its In-Reply-To and References,
        which may name a message ace-mail sent for a contact.
    @ivar tag: The contact id in a C{[#id]} tag of the subject, or L{None}.
    @ivar newContactId: The id the contact gets if the message opens one.
    @ivar received: When it was taken, in POSIX seconds.
    """

    account: str
    uidl: str
    digest: str
    messageId: str | None
    original: str
    entrance: str
    customerAddress: str | None
    customerName: str
    subject: str
    references: tuple[str, ...] = field(converter=_strings)
    threadIds: tuple[str, ...] = field(converter=_strings)
    tag: str | None
    newContactId: str
    received: float


@frozen
class Planned:
    """
    The ids chosen beforehand for a message intake may send.

    @ivar queueId: Its queue id, from L{ace_mail.spool.newQueueId}.
    @ivar messageId: Its Message-ID, with angle brackets.
    """

    queueId: str
    messageId: str


@frozen
class Plan:
    """
    What intake sends for an arrival, if the store's records allow.

    @ivar answer: The automatic answer to a new contact, or L{None} when the
        entrance has none or the message must not be answered.
    @ivar answerLimit: The most automatic answers to one address within
        C{answerWindow}.
    @ivar answerWindow: In seconds.
    @ivar agent: The physical email to the entrance's agent mailbox, or
        L{None} when it has none.
    @ivar agentAddress: That mailbox, or L{None}.
    @ivar endedAfter: Contacts ended before this time (POSIX seconds) have
        expired: no message is attached to them any more.
    """

    answer: Planned | None
    answerLimit: int
    answerWindow: float
    agent: Planned | None
    agentAddress: str | None
    endedAfter: float


@frozen
class Dispatch:
    """
    A message intake decided to send for a contact.

    @ivar queueId: Its queue id, chosen before it is enqueued.
    @ivar kind: L{ANSWER} or L{AGENT}.
    @ivar contactId: The contact it is about.
    @ivar recipient: Its envelope recipient: the customer's address in
        lower case, or the agent's address.
    @ivar messageId: Its Message-ID, with angle brackets.
    @ivar original: For L{AGENT}, the name of the stored original it is
        made of; L{None} for L{ANSWER}.
    @ivar created: When it was decided, in POSIX seconds.
    @ivar state: L{PENDING} until it is in the queue, then L{QUEUED};
        L{DROPPED} when it could not be made.
    """

    queueId: str
    kind: str
    contactId: str
    recipient: str
    messageId: str
    original: str | None
    created: float
    state: str = PENDING


@frozen
class Taken:
    """
    What the store decided about an arrival, committed in one transaction.

    @ivar outcome: L{CREATED}, L{THREADED}, L{DUPLICATE} or L{REFUSED}.
    @ivar contactId: The contact the message belongs to, or L{None}.
    @ivar dispatches: The messages to send, all L{PENDING}.
    """

    outcome: str
    contactId: str | None
    dispatches: tuple[Dispatch, ...] = ()
