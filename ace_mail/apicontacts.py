# -*- test-case-name: tests.test_apicontacts -*-
"""
The API's contact endpoints: ACE makes contacts, looks them up and ends them.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ace_mail.accounts import AccountStatus
from ace_mail.address import isMailbox, parseMailbox
from ace_mail.api import Answer, ApiError, field, rfc3339
from ace_mail.intake import DeliverError
from ace_mail.store import Contact, ContactQuery, Entrance, IContactStore

_MESSAGE_ID = re.compile(r"^<[^<>\s@]+@[^<>\s@]+>$")
_CONTACT_ID = r"([A-Za-z2-7]{16,64})"
_FIELDS = {"customer", "entrance", "subject", "messageId", "externalId"}


def _parseTime(text: str, name: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            400, "badRequest", f"{name!r} must be an RFC 3339 time"
        ) from None
    if moment.tzinfo is None:
        raise ApiError(400, "badRequest", f"{name!r} needs a time zone, such as Z")
    return moment.timestamp()


def _writeCursor(created: float, contactId: str) -> str:
    raw = f"{created!r}:{contactId}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _readCursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, contactId = raw.decode("ascii").split(":", 1)
        return float(created), contactId
    except ValueError:
        raise ApiError(
            400, "badRequest", "'cursor' is not one that this API gave out"
        ) from None


class ContactEndpoints:
    """
    C{/v1/contacts}: ACE's view of the contacts that agents answer.

    @ivar retentionSeconds: How long after its end a contact can still be
        answered; after that it is gone for the API too.
    """

    def __init__(
        self,
        reactor: Any,
        store: IContactStore,
        entrances: Mapping[str, Entrance],
        *,
        rerouteName: str,
        retentionSeconds: float,
        deliver: Callable[[str, str], Deferred[str]],
        accounts: Callable[[], Sequence[AccountStatus]],
    ) -> None:
        self.reactor = reactor
        self.store = store
        self.entrances = entrances
        self.rerouteName = rerouteName
        self.retentionSeconds = retentionSeconds
        self.deliver = deliver
        self.accounts = accounts

    def routes(self) -> list[tuple[bytes, re.Pattern[str], Callable[..., Any]]]:
        """
        @return: The method, path pattern and handler of each endpoint.
        """
        return [
            (b"POST", re.compile(r"^/v1/contacts$"), self.postContact),
            (b"GET", re.compile(r"^/v1/contacts$"), self.listContacts),
            (b"GET", re.compile(rf"^/v1/contacts/{_CONTACT_ID}$"), self.getContact),
            (
                b"POST",
                re.compile(rf"^/v1/contacts/{_CONTACT_ID}/end$"),
                self.endContact,
            ),
            (
                b"POST",
                re.compile(rf"^/v1/contacts/{_CONTACT_ID}/deliver$"),
                self.deliverContact,
            ),
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
        if not isinstance(body, dict):
            raise ApiError(400, "badRequest", "the request body must be a JSON object")
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise ApiError(400, "badRequest", f"unknown field {unknown[0]!r}")
        customer = field(body, "customer", str)
        mailbox = parseMailbox(customer) if len(customer) <= 998 else None
        if mailbox is None:
            raise ApiError(
                400,
                "badAddress",
                f"'customer' is not an address such as "
                f"'Name <name@example.com>': {customer!r}",
            )
        name, address = mailbox
        entrance = field(body, "entrance", str, required=False) or "default"
        if entrance not in self.entrances:
            raise ApiError(
                400, "badRequest", f"'entrance' names no entrance: {entrance!r}"
            )
        subject = field(body, "subject", str, required=False) or ""
        if len(subject) > 998 or "\n" in subject or "\r" in subject:
            raise ApiError(
                400,
                "badRequest",
                "'subject' must be one line of at most 998 characters",
            )
        messageId = field(body, "messageId", str, required=False)
        if messageId is not None and not _MESSAGE_ID.match(messageId):
            raise ApiError(400, "badRequest", "'messageId' must look like <id@host>")
        externalId = field(body, "externalId", str, required=False)
        if externalId is not None and not 0 < len(externalId) <= 200:
            raise ApiError(
                400, "badRequest", "'externalId' must be 1 to 200 characters"
            )
        made = self.store.create(
            entrance=entrance,
            customerAddress=address,
            customerName=name,
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
        found = self.store.get(contactId.lower())
        return found.addCallback(
            lambda contact: Answer(200, self.show(self._known(contact, contactId)))
        )

    def endContact(self, body: Any, contactId: str) -> Deferred[Answer]:
        """
        End a contact in ACE Agent; replies are taken until it expires.
        """

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
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            raise ApiError(400, "badRequest", "'limit' must be a number from 1 to 1000")
        since = None
        if query.get("since"):
            since = _parseTime(query["since"], "since")
        after = _readCursor(query["cursor"]) if query.get("cursor") else None
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
                cursor = _writeCursor(last.created, last.id)
            shown = [self.show(contact) for contact in contacts]
            return Answer(200, {"contacts": shown, "cursor": cursor})

        return listed.addCallback(page)

    def deliverContact(self, body: Any, contactId: str) -> Deferred[Answer]:
        """
        Queue the physical email of a contact to an agent's own mailbox.
        """
        if not isinstance(body, dict):
            raise ApiError(400, "badRequest", "the request body must be a JSON object")
        unknown = sorted(set(body) - {"agent"})
        if unknown:
            raise ApiError(400, "badRequest", f"unknown field {unknown[0]!r}")
        agent = field(body, "agent", str)
        if not isMailbox(agent):
            raise ApiError(
                400, "badAddress", f"'agent' is not a mail address: {agent!r}"
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

    def getAccounts(self, body: Any) -> Answer:
        """
        Each POP3 account's state: last poll and result, counts, next poll.
        """
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
                    }
                    for status in self.accounts()
                ]
            },
        )
