# -*- test-case-name: tests.test_webhook -*-
"""
Notifications for ACE: a JSON POST to one webhook URL for each new contact
and each bounce, taken from a durable outbox one at a time and in order, and
retried with a growing delay until the receiver answers 2xx.

Delivery is at least once: a notification that the receiver took just
before ace-mail died is sent again, with the same C{id}.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet import error
from twisted.internet.defer import (
    Deferred,
    TimeoutError,
    execute,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IConsumer, IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseFailed, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from ace_mail import __version__
from ace_mail.api import rfc3339
from ace_mail.queue import Bounced
from ace_mail.store import (
    CONTACT_CREATED,
    MESSAGE_BOUNCED,
    Contact,
    SQLiteWebhookOutbox,
    WebhookEvent,
)

_log = Logger()

SIGNATURE_HEADER = "X-Ace-Mail-Signature"
"""
The header that carries C{sha256=} and the hexadecimal HMAC-SHA256 of the
body, keyed with the webhook secret, when one is set.
"""


class WebhookRefused(Exception):
    """
    The receiver answered, but not with 2xx.
    """

    def __init__(self, status: int, text: bytes) -> None:
        snippet = text[:200].decode("utf-8", "replace").strip()
        super().__init__(f"it answered {status}" + (f": {snippet}" if snippet else ""))


@implementer(IBodyProducer)
class _Body:
    """
    A request body held in memory, written in one piece.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def signature(secret: str, body: bytes) -> str:
    """
    @return: The value of L{SIGNATURE_HEADER} for C{body}.
    """
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def bounceRecorder(
    reactor: IReactorTime, outbox: SQLiteWebhookOutbox
) -> Callable[[Bounced], Deferred[None]]:
    """
    @return: The queue's C{onBounce}: it keeps a notification of each bounce
        in the outbox, on disk before the L{Deferred} fires.
    """

    def record(bounced: Bounced) -> Deferred[None]:
        failures = [
            {
                "recipient": failure.recipient,
                "reply": str(failure.reply),
                "server": failure.server or None,
            }
            for failure in bounced.failures
        ]
        payload: dict[str, Any] = {
            "queueId": bounced.queueId,
            "bounceId": bounced.bounceId,
            "from": bounced.envelope.sender,
            "route": bounced.envelope.route,
            "recipients": [failure["recipient"] for failure in failures],
            "reply": failures[0]["reply"],
            "expired": bounced.expired,
            "failures": failures,
        }
        kept = execute(outbox.add, MESSAGE_BOUNCED, reactor.seconds(), payload)
        return kept.addCallback(lambda event: None)

    return record


def _why(reason: Failure, timeout: float) -> str | None:
    """
    @return: What went wrong with one attempt, in a few words, or L{None}
        when it is not a failure of the network or of the receiver.
    """
    if reason.check(TimeoutError):
        return f"no answer within {timeout:g} seconds"
    if reason.check(WebhookRefused, error.ConnectError, error.DNSLookupError):
        return reason.getErrorMessage().rstrip(".")
    if isinstance(reason.value, ResponseFailed):
        reasons = reason.value.reasons
        detail = reasons[0].getErrorMessage() if reasons else "no reason given"
        return f"the connection failed: {detail.rstrip('.')}"
    return None


def _about(event: WebhookEvent) -> str:
    """
    @return: What a notification is about, for the log: the contact or the
        message by its id.
    """
    if event.kind == CONTACT_CREATED:
        return f"contact {event.payload['id']}"
    return f"message {event.payload['queueId']}"


class Notifier(Service):
    """
    Sends the outbox's notifications to the webhook receiver, the oldest
    first, one at a time: one that fails blocks the ones behind it until it
    is taken.  When the outbox is empty it looks again every
    C{pollInterval} seconds, as the store adds notifications of new
    contacts by itself.
    """

    def __init__(
        self,
        reactor: Any,
        outbox: SQLiteWebhookOutbox,
        url: str,
        *,
        showContact: Callable[[Contact], dict[str, Any]],
        secret: str | None = None,
        agent: IAgent | None = None,
        timeout: float = 30.0,
        minimalBackoff: float = 5.0,
        maximalBackoff: float = 600.0,
        pollInterval: float = 1.0,
    ) -> None:
        """
        @param reactor: L{IReactorTime}, and L{IReactorTCP} unless C{agent}
            is given.
        @param outbox: Where the notifications wait.
        @param url: The receiver.
        @param showContact: Renders a contact as C{GET /v1/contacts/ID} does.
        @param secret: The key of L{SIGNATURE_HEADER}, or L{None}.
        @param agent: Makes the requests; by default an L{Agent} that opens
            a new connection for each.
        @param timeout: The longest an attempt may take, from connecting to
            the end of the answer.
        @param minimalBackoff: The wait after a failed attempt, doubled for
            each further failure in a row...
        @param maximalBackoff: ...up to this.
        @param pollInterval: How often an empty outbox is looked at.
        """
        self._reactor = reactor
        self._outbox = outbox
        self._url = url
        self._showContact = showContact
        self._secret = secret
        self._agent: IAgent = agent or Agent(reactor, connectTimeout=timeout)
        self._timeout = timeout
        self._minimalBackoff = minimalBackoff
        self._maximalBackoff = maximalBackoff
        self._pollInterval = pollInterval
        self._failures = 0
        self._timer: IDelayedCall | None = None
        self._attempt: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        _log.info(
            "Webhook: {pending} notifications wait for {url}",
            pending=self._outbox.pending(),
            url=self._url,
        )
        self._next()

    def stopService(self) -> None:
        """
        Stop sending; an attempt under way is abandoned, and its
        notification is sent again after a restart.
        """
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._attempt is not None:
            self._attempt.cancel()

    def _next(self) -> None:
        self._timer = None
        if not self.running or self._attempt is not None:
            return
        event = self._outbox.head()
        if event is None:
            self._timer = self._reactor.callLater(self._pollInterval, self._next)
            return
        attempt = maybeDeferred(self._post, event).addCallback(self._delivered, event)
        self._attempt = attempt
        attempt.addCallbacks(self._advance, self._failed, errbackArgs=(event,))

    def body(self, event: WebhookEvent) -> bytes:
        """
        @return: The JSON body of a notification, the same in every attempt.
        """
        document: dict[str, Any] = {
            "event": event.kind,
            "id": event.id,
            "time": rfc3339(event.time),
        }
        if event.kind == CONTACT_CREATED:
            fields = dict(event.payload)
            fields["references"] = tuple(fields["references"])
            document["contact"] = self._showContact(Contact(ended=None, **fields))
        else:
            document["bounce"] = event.payload
        return json.dumps(document).encode("utf-8")

    def _post(self, event: WebhookEvent) -> Deferred[int]:
        body = self.body(event)
        headers = Headers(
            {
                b"Content-Type": [b"application/json"],
                b"User-Agent": [f"ace-mail/{__version__}".encode("ascii")],
                b"X-Ace-Mail-Event": [event.kind.encode("ascii")],
                b"X-Ace-Mail-Event-Id": [event.id.encode("ascii")],
            }
        )
        if self._secret is not None:
            headers.addRawHeader(
                SIGNATURE_HEADER.encode("ascii"),
                signature(self._secret, body).encode("ascii"),
            )
        request = self._agent.request(
            b"POST", self._url.encode("utf-8"), headers, _Body(body)
        )
        answered = request.addCallback(self._answered)
        return answered.addTimeout(self._timeout, self._reactor)

    def _answered(self, response: IResponse) -> Deferred[int]:
        def check(text: bytes) -> int:
            code: int = response.code
            if not 200 <= code < 300:
                raise WebhookRefused(code, text)
            return code

        return readBody(response).addCallback(check)

    def _delivered(self, status: int, event: WebhookEvent) -> None:
        self._outbox.remove(event.seq)
        _log.info(
            "Webhook: {kind} {eventId} of {about} delivered to {url} ({status})",
            kind=event.kind,
            eventId=event.id,
            about=_about(event),
            url=self._url,
            status=status,
        )

    def _advance(self, ignored: None) -> None:
        self._attempt = None
        self._failures = 0
        self._next()

    def _failed(self, reason: Failure, event: WebhookEvent) -> None:
        self._attempt = None
        if not self.running:
            return
        self._failures += 1
        exponent = min(self._failures - 1, 32)
        delay = min(self._maximalBackoff, self._minimalBackoff * 2**exponent)
        why = _why(reason, self._timeout)
        if why is None:
            _log.failure(
                "Webhook: {kind} {eventId} of {about} could not be sent; next try in "
                "{delay:g} seconds",
                reason,
                kind=event.kind,
                eventId=event.id,
                about=_about(event),
                delay=delay,
            )
        else:
            _log.warn(
                "Webhook: {kind} {eventId} of {about} not taken by {url} ({failures} failures "
                "in a row): {why}; next try in {delay:g} seconds",
                kind=event.kind,
                eventId=event.id,
                about=_about(event),
                url=self._url,
                failures=self._failures,
                why=why,
                delay=delay,
            )
        self._timer = self._reactor.callLater(delay, self._next)


def openOutbox(path: str, url: str | None) -> SQLiteWebhookOutbox:
    """
    Open the outbox of the contact store in C{path} and point it at the
    webhook, or, with no webhook, drop what waits and make no more.

    @raise ContactStoreError: If it cannot be opened.
    """
    outbox = SQLiteWebhookOutbox.open(path)
    waiting = outbox.setTarget(url)
    if url is None and waiting:
        _log.warn(
            "Webhook: no webhookUrl is set, so {count} notifications that "
            "waited were dropped",
            count=waiting,
        )
    return outbox
