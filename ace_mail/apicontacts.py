# -*- test-case-name: tests.test_apicontacts,tests.test_apireply -*-
"""
The API's contact endpoints: ACE makes contacts, looks them up and ends
them, has them delivered to agents, sends agents' typed replies, and reads
the customers' stored emails.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Callable, Mapping, Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ace_mail.accounts import AccountStatus
from ace_mail.address import isMailbox, parseMailbox
from ace_mail.api import Answer, ApiError, field, rfc3339
from ace_mail.apifields import (
    checkText,
    noParameters,
    objectBody,
    optionalText,
    parseTime,
    readCursor,
    readReply,
    writeCursor,
)
from ace_mail.envelope import Envelope
from ace_mail.intake import DeliverError
from ace_mail.rawanswer import RawAnswer
from ace_mail.replymail import TypedReply, buildReply, replyEnvelope
from ace_mail.store import Contact, ContactQuery, Entrance, IIntakeStore

_log = Logger()
_MESSAGE_ID = re.compile(r"^<[^<>\s@]+@[^<>\s@]+>$")
_CONTACT_ID = r"([A-Za-z2-7]{16,64})"
_FIELDS = {"customer", "entrance", "subject", "messageId", "externalId"}


class ContactEndpoints:
    """
    C{/v1/contacts}: ACE's view of the contacts that agents answer.

    @ivar retentionSeconds: How long after its end a contact can still be
        answered; after that it is gone for the API too.
    """

    def __init__(
        self,
        reactor: Any,
        store: IIntakeStore,
        entrances: Mapping[str, Entrance],
        *,
        entranceRoutes: Mapping[str, str],
        rerouteName: str,
        retentionSeconds: float,
        messageSizeLimit: int,
        enqueue: Callable[[Envelope, bytes], Deferred[str]],
        deliver: Callable[[str, str], Deferred[str]],
        accounts: Callable[[], Sequence[AccountStatus]],
    ) -> None:
        """
        @param store: The contacts, with their stored originals.
        @param entrances: Each entrance by name, the sender of typed replies.
        @param entranceRoutes: The queue route of each entrance's mail, by
            entrance name (see L{EntranceConfig.routeName
            <ace_mail._entrances.EntranceConfig.routeName>}).
        @param rerouteName: The host name of contact addresses.
        @param messageSizeLimit: The largest typed reply, in bytes.
        @param enqueue: Accepts a message for the queue, firing with its
            queue id once it is on disk.
        @param deliver: Queues a contact's physical email to an agent.
        @param accounts: The status of each POP3 account.
        """
        self.reactor = reactor
        self.store = store
        self.entrances = entrances
        self.entranceRoutes = entranceRoutes
        self.rerouteName = rerouteName
        self.retentionSeconds = retentionSeconds
        self.messageSizeLimit = messageSizeLimit
        self.enqueue = enqueue
        self.deliver = deliver
        self.accounts = accounts

    def routes(self) -> list[tuple[bytes, re.Pattern[str], Callable[..., Any]]]:
        """
        @return: The method, path pattern and handler of each endpoint.
        """
        one = rf"^/v1/contacts/{_CONTACT_ID}"
        return [
            (b"POST", re.compile(r"^/v1/contacts$"), self.postContact),
            (b"GET", re.compile(r"^/v1/contacts$"), self.listContacts),
            (b"GET", re.compile(rf"{one}$"), self.getContact),
            (b"POST", re.compile(rf"{one}/end$"), self.endContact),
            (b"POST", re.compile(rf"{one}/deliver$"), self.deliverContact),
            (b"POST", re.compile(rf"{one}/reply$"), self.replyContact),
            (b"GET", re.compile(rf"{one}/message$"), self.getMessage),
            (b"GET", re.compile(r"^/v1/accounts$"), self.getAccounts),
        ]

    def show(self, contact: Contact) -> dict[str, Any]:
        """
        @return: A contact as the API shows it.
        """
        expires = (
            None if contact.ended is None else contact.ended + self.retentionSeconds
        )
        return {
            "id": contact.id,
            "address": f"{contact.id}@{self.rerouteName}",
            "customer": contact.formattedCustomer(),
            "entrance": contact.entrance,
            "subject": contact.subject,
            "externalId": contact.externalId,
            "state": "open" if contact.ended is None else "ended",
            "created": rfc3339(contact.created),
            "ended": rfc3339(contact.ended),
            "expires": rfc3339(expires),
        }

    def postContact(self, body: Any) -> Deferred[Answer]:
        """
        Make a contact, for channels other than POP3 and for tests.
        """
        body = objectBody(body, _FIELDS)
        customer = field(body, "customer", str)
        mailbox = parseMailbox(customer) if len(customer) <= 998 else None
        if mailbox is None:
            raise ApiError(
                400,
                "badAddress",
                f"'customer' is not an address such as "
                f"'Name <name@example.com>': {customer[:200]!r}",
            )
        name, address = mailbox
        entrance = field(body, "entrance", str, required=False) or "default"
        if entrance not in self.entrances:
            raise ApiError(
                400, "badRequest", f"'entrance' names no entrance: {entrance[:200]!r}"
            )
        subject = optionalText(body, "subject", 998, oneLine=True) or ""
        messageId = field(body, "messageId", str, required=False)
        if messageId is not None and not (
            len(messageId) <= 998 and _MESSAGE_ID.match(messageId)
        ):
            raise ApiError(
                400,
                "badRequest",
                "'messageId' must look like <id@host>, in at most 998 characters",
            )
        externalId = optionalText(body, "externalId", 200, oneLine=True)
        if externalId == "":
            raise ApiError(400, "badRequest", "'externalId' must not be empty")
        made = self.store.create(
            entrance=entrance,
            customerAddress=address,
            customerName=checkText(name, "customer", 998),
            subject=subject,
            messageId=messageId,
            references=(),
            externalId=externalId,
            now=self.reactor.seconds(),
        )
        return made.addCallback(lambda contact: Answer(201, self.show(contact)))

    def _known(self, contact: Contact | None, contactId: str) -> Contact:
        if contact is None or (
            contact.ended is not None
            and self.reactor.seconds() - contact.ended > self.retentionSeconds
        ):
            raise ApiError(404, "notFound", f"no contact {contactId} is known here")
        return contact

    def getContact(self, body: Any, contactId: str) -> Deferred[Answer]:
        """
        Show one contact; an expired one is gone.
        """
        noParameters(body)
        found = self.store.get(contactId.lower())
        return found.addCallback(
            lambda contact: Answer(200, self.show(self._known(contact, contactId)))
        )

    def endContact(self, body: Any, contactId: str) -> Deferred[Answer]:
        """
        End a contact in ACE Agent; replies are taken until it expires.
        """
        objectBody(body, set(), required=False)

        def end(contact: Contact | None) -> Deferred[Answer]:
            self._known(contact, contactId)
            ended = self.store.end(contactId.lower(), self.reactor.seconds())
            return ended.addCallback(
                lambda contact: Answer(200, self.show(self._known(contact, contactId)))
            )

        return self.store.get(contactId.lower()).addCallback(end)

    def listContacts(self, query: dict[str, str]) -> Deferred[Answer]:
        """
        List contacts oldest first, a page at a time; C{cursor} continues
        where the previous page ended.
        """
        unknown = sorted(set(query) - {"state", "entrance", "since", "limit", "cursor"})
        if unknown:
            raise ApiError(400, "badRequest", f"unknown parameter {unknown[0]!r}")
        state = query.get("state") or None
        if state not in (None, "open", "ended"):
            raise ApiError(400, "badRequest", "'state' must be open or ended")
        limit = query.get("limit", "100")
        if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= 1000:
            raise ApiError(400, "badRequest", "'limit' must be a number from 1 to 1000")
        since = None
        if query.get("since"):
            since = parseTime(query["since"], "since")
        after = readCursor(query["cursor"]) if query.get("cursor") else None
        listed = self.store.listContacts(
            ContactQuery(
                endedSince=self.reactor.seconds() - self.retentionSeconds,
                state=state,
                entrance=query.get("entrance") or None,
                createdSince=since,
                after=after,
                limit=int(limit),
            )
        )

        def page(contacts: list[Contact]) -> Answer:
            cursor = None
            if len(contacts) == int(limit):
                last = contacts[-1]
                cursor = writeCursor(last.created, last.id)
            shown = [self.show(contact) for contact in contacts]
            return Answer(200, {"contacts": shown, "cursor": cursor})

        return listed.addCallback(page)

    def deliverContact(self, body: Any, contactId: str) -> Deferred[Answer]:
        """
        Queue the physical email of a contact to an agent's own mailbox.
        """
        agent = field(objectBody(body, {"agent"}), "agent", str)
        if not isMailbox(agent):
            raise ApiError(
                400, "badAddress", f"'agent' is not a mail address: {agent[:200]!r}"
            )

        def send(contact: Contact | None) -> Deferred[Answer]:
            self._known(contact, contactId)
            queued = self.deliver(contactId.lower(), agent)
            queued.addErrback(self._notDelivered)
            return queued.addCallback(lambda queueId: Answer(202, {"queueId": queueId}))

        return self.store.get(contactId.lower()).addCallback(send)

    def _notDelivered(self, reason: Failure) -> str:
        reason.trap(DeliverError)
        raise ApiError(409, "notDeliverable", str(reason.value).rstrip("."))

    def replyContact(self, body: Any, contactId: str) -> Deferred[Answer]:
        """
        Send an agent's typed reply to the customer, from the contact's
        entrance and on its route.
        """
        reply = readReply(body, self.messageSizeLimit)
        return Deferred.fromCoroutine(self._reply(reply, contactId))

    async def _reply(self, reply: TypedReply, contactId: str) -> Answer:
        contact = self._known(await self.store.get(contactId.lower()), contactId)
        entrance = self.entrances.get(contact.entrance)
        if entrance is None:
            raise ApiError(
                409,
                "notDeliverable",
                f"the entrance {contact.entrance!r} of contact {contact.id} "
                "is no longer configured",
            )
        domain = entrance.address.rpartition("@")[2]
        messageId = f"<{secrets.token_hex(16)}@{domain}>"
        message = buildReply(
            entrance, contact, reply, messageId=messageId, date=self.reactor.seconds()
        )
        if len(message) > self.messageSizeLimit:
            raise ApiError(
                400,
                "tooLarge",
                f"the reply would be {len(message)} bytes, larger than the "
                f"limit of {self.messageSizeLimit} bytes",
            )
        route = self.entranceRoutes.get(entrance.name, "outgoing")
        await self.store.recordMessageId(contact.id, messageId)
        queueId = await self.enqueue(replyEnvelope(entrance, contact, route), message)
        _log.info(
            "Contact {contactId}: typed reply queued as {queueId} for "
            "{recipient} on route {route}.",
            contactId=contact.id,
            queueId=queueId,
            recipient=contact.customerAddress,
            route=route,
        )
        return Answer(202, {"queueId": queueId})

    def getMessage(self, query: dict[str, str], contactId: str) -> Deferred[RawAnswer]:
        """
        Send the customer's email that opened a contact, as it was taken.
        """
        noParameters(query)
        return Deferred.fromCoroutine(self._message(contactId))

    async def _message(self, contactId: str) -> RawAnswer:
        self._known(await self.store.get(contactId.lower()), contactId)
        name = await self.store.originalOf(contactId.lower())
        missing = ApiError(404, "notFound", f"contact {contactId} has no stored email")
        if name is None:
            raise missing
        try:
            original = await self.store.readOriginal(name)
        except OSError as e:
            _log.error(
                "Contact {contactId}: cannot read its stored email {name}: {error}",
                contactId=contactId.lower(),
                name=name,
                error=e.strerror,
            )
            raise ApiError(
                503,
                "storageUnavailable",
                f"the stored email of contact {contactId} cannot be read; "
                "see the log",
            ) from None
        if original is None:
            raise missing
        return RawAnswer(200, "message/rfc822", original)

    def getAccounts(self, body: Any) -> Answer:
        """
        Each POP3 account's state: last poll and result, counts, next poll.
        """
        noParameters(body)
        return Answer(
            200,
            {
                "accounts": [
                    {
                        "name": status.account,
                        "polling": status.polling,
                        "lastPoll": rfc3339(status.lastPoll),
                        "lastResult": status.lastResult,
                        "messagesTaken": status.messagesTaken,
                        "messagesTooLarge": status.messagesTooLarge,
                        "errors": status.errors,
                        "consecutiveFailures": status.consecutiveFailures,
                        "nextPoll": rfc3339(status.nextPoll),
                        "lease": status.lease,
                    }
                    for status in self.accounts()
                ]
            },
        )
