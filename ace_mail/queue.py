# -*- test-case-name: tests.test_queue,tests.test_queuemachine -*-
"""
The queue: when each spooled message is tried, and what its outcome means.

Messages that were being delivered when the service stopped (or the process
died) are delivered again after a restart; every other message is tried
once per due time.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from typing import Callable, Mapping, Sequence

from attrs import define, evolve, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._time import utcText
from .envelope import Envelope, MessageSource, Outcome, Reply
from .mime import FailedRecipient, buildBounce, headerPart
from .spool import MessageParts, Spool

_log = Logger()

_HEADER_LIMIT = 256 << 10
SIGNED_PARTS_LIMIT = 10 << 20

Deliver = Callable[[Envelope, MessageSource, str], Deferred[Outcome]]

AttemptObserver = Callable[[str, str, Mapping[str, int], float], None]
"""
Told of each delivery attempt's outcome: the route, the server that had the
last word (or C{""}), how many recipients were C{"delivered"},
C{"deferred"} and C{"failed"} (for good), and the message's age in seconds.
"""


@frozen
class Bounced:
    """
    A message that bounced: some of its recipients failed for good, and its
    sender was sent a bounce.

    @ivar queueId: The message's queue id.
    @ivar envelope: Its envelope at the attempt that failed.
    @ivar failures: The recipients that failed, with their replies.
    @ivar bounceId: The queue id of the bounce.
    @ivar expired: Whether they failed because the message was too long in
        the queue.
    """

    queueId: str
    envelope: Envelope
    failures: tuple[FailedRecipient, ...]
    bounceId: str
    expired: bool


def _ignoreBounce(bounced: Bounced) -> Deferred[None]:
    return succeed(None)


@frozen
class QueueEntry:
    """
    What the queue knows about one message.

    @ivar queueId: Its queue id.
    @ivar sender: The envelope sender, C{""} for a bounce.
    @ivar recipients: The recipients it has yet to be delivered to.
    @ivar route: The route it leaves on.
    @ivar state: C{"active"} while a delivery is under way, C{"deferred"}
        after a failed attempt, C{"queued"} before the first attempt.
    @ivar attempts: Its failed attempts so far.
    @ivar created: When it was accepted, in seconds since the epoch.
    @ivar nextAttempt: When it is due.
    @ivar lastError: The reply of its last failed attempt, or C{""}.
    @ivar size: Its size in bytes.
    """

    queueId: str
    sender: str
    recipients: tuple[str, ...]
    route: str
    state: str
    attempts: int
    created: float
    nextAttempt: float
    lastError: str
    size: int


@define(eq=False)
class _Entry:
    queueId: str
    envelope: Envelope
    created: float
    size: int
    attempts: int = 0
    nextAttempt: float = 0.0
    lastError: str = ""
    active: bool = False
    deleted: bool = False
    ticket: int = -1


class Queue(Service):
    """
    Schedules the messages of a L{Spool} and hands due ones to C{deliver},
    at most C{concurrency} at a time, earliest due first.

    The queue opens nothing itself: it recovers the spool when started and
    closes it when stopped.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        spool: Spool,
        deliver: Deliver,
        *,
        minimalBackoff: float = 300.0,
        maximalBackoff: float = 4000.0,
        lifetime: float = 5 * 86400.0,
        concurrency: int = 20,
        hostname: str,
        signer: Callable[[bytes], bytes] | None = None,
        onBounce: Callable[[Bounced], Deferred[None]] | None = None,
        onAttempt: AttemptObserver | None = None,
    ) -> None:
        """
        @param deliver: Delivers one message: called with its envelope, its
            source and its queue id, it fires with the L{Outcome}.
        @param minimalBackoff: The delay before the first retry, doubled for
            each further one.
        @param maximalBackoff: The longest delay between two attempts.
        @param lifetime: How long a message is tried before it bounces.
        @param concurrency: The most deliveries under way at once.
        @param hostname: This server's name, in bounces.
        @param signer: Signs a message before it is spooled, if given.
        @param onBounce: Told of each bounce once it is queued; the message
            stays in the queue until the L{Deferred} it returns fires.
        @param onAttempt: Told of the outcome of each delivery attempt, for
            metrics.
        """
        self._reactor = reactor
        self._spool = spool
        self._deliver = deliver
        self._minimalBackoff = minimalBackoff
        self._maximalBackoff = maximalBackoff
        self._lifetime = lifetime
        self._concurrency = concurrency
        self._hostname = hostname
        self._signer = signer
        self._onBounce = onBounce or _ignoreBounce
        self._onAttempt = onAttempt
        self._entries: dict[str, _Entry] = {}
        self._due: list[tuple[float, int, str]] = []
        self._tickets = itertools.count()
        self._inFlight = 0
        self._timer: IDelayedCall | None = None
        self._timerAt = 0.0

    def startService(self) -> None:
        """
        Recover the spool and schedule every message in it.
        """
        super().startService()
        for message in self._spool.recover():
            entry = _Entry(
                message.queueId,
                message.envelope,
                message.created,
                message.size,
                message.attempts,
                message.nextAttempt,
                message.lastError,
            )
            self._entries[entry.queueId] = entry
            self._schedule(entry)
            _log.info(
                "{queueId}: recovered, {attempts} attempts so far, due {due}",
                queueId=entry.queueId,
                attempts=entry.attempts,
                due=utcText(entry.nextAttempt),
            )
        self._pump()

    def stopService(self) -> Deferred[None]:
        """
        Stop scheduling and close the spool; deliveries still under way are
        not waited for, and their messages are delivered again after a
        restart.
        """
        super().stopService()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return self._spool.close()

    def enqueue(
        self,
        envelope: Envelope,
        message: bytes | MessageParts,
        queueId: str | None = None,
    ) -> Deferred[str]:
        """
        Accept a message, due at once.

        @param message: The message, in memory or as parts that the spool
            copies from their files without holding the whole in memory
            (their files must stay open until the L{Deferred} fires or
            fails).  With a signer, parts of less than
            L{SIGNED_PARTS_LIMIT} bytes are read into memory and signed;
            larger ones are queued unsigned, and a warning says so, as
            signing needs the whole message in memory.
        @param queueId: The queue id to give it, chosen beforehand with
            L{ace_mail.spool.newQueueId} by a caller that must enqueue it
            exactly once (see L{knows}); a new one by default.
        @return: A L{Deferred} that fires with its queue id once it is on
            disk, or fails with L{ValueError} if C{queueId} is in use.
        @raise ValueError: If the envelope has no recipients.
        """
        if not envelope.recipients:
            raise ValueError("a message needs at least one recipient")
        size = message.length if isinstance(message, MessageParts) else len(message)
        unsigned = isinstance(message, MessageParts) and size >= SIGNED_PARTS_LIMIT
        if self._signer is not None and not unsigned:
            if isinstance(message, MessageParts):
                message = message.read()
            message = self._signer(message)
            size = len(message)
        created = self._reactor.seconds()

        def accepted(queueId: str) -> str:
            if self._signer is not None and unsigned:
                _log.warn(
                    "{queueId}: queued unsigned: {size} bytes is too large to sign",
                    queueId=queueId,
                    size=size,
                )
            entry = _Entry(queueId, envelope, created, size)
            entry.nextAttempt = created
            self._entries[queueId] = entry
            _log.info(
                "{queueId}: accepted {size} bytes from <{sender}> to "
                "{recipients} on route {route}",
                queueId=queueId,
                size=entry.size,
                sender=envelope.sender,
                recipients=", ".join(envelope.recipients),
                route=envelope.route,
            )
            self._schedule(entry)
            self._pump()
            return queueId

        added = self._spool.add(envelope, message, created, queueId)
        return added.addCallback(accepted)

    def knows(self, queueId: str) -> bool:
        """
        Tell whether a message was ever enqueued under a queue id, as far as
        this process can know: it is in the queue, or its record (live or
        delivered) was in the spool when the service started.  A caller that
        noted a queue id before L{enqueue} and may have died before hearing
        the answer asks this at start-up, before enqueueing anything.

        @raise RuntimeError: If the service has not started yet.
        """
        return queueId in self._entries or self._spool.seen(queueId)

    def list(self) -> list[QueueEntry]:
        """
        @return: Every message in the queue, oldest first.
        """
        entries = sorted(self._entries.values(), key=lambda entry: entry.created)
        return [self._view(entry) for entry in entries]

    def get(self, queueId: str) -> QueueEntry | None:
        """
        @return: The message with this queue id, or L{None}.
        """
        entry = self._entries.get(queueId)
        return None if entry is None else self._view(entry)

    def retry(self, queueId: str) -> bool:
        """
        Make a message due now.

        @return: C{False} if there is no such message.
        """
        entry = self._entries.get(queueId)
        if entry is None:
            return False
        if not entry.active:
            entry.nextAttempt = self._reactor.seconds()
            self._spool.update(
                queueId, entry.attempts, entry.nextAttempt, entry.lastError
            )
            self._schedule(entry)
            self._pump()
        return True

    def delete(self, queueId: str, why: str = "by an operator") -> bool:
        """
        Drop a message without a bounce; a delivery under way still ends.

        @param why: Why it is dropped, for the log.
        @return: C{False} if there is no such message.
        """
        entry = self._entries.pop(queueId, None)
        if entry is None:
            return False
        entry.deleted = True
        self._spool.remove(queueId)
        _log.info("{queueId}: deleted {why}", queueId=queueId, why=why)
        return True

    def _view(self, entry: _Entry) -> QueueEntry:
        if entry.active:
            state = "active"
        else:
            state = "deferred" if entry.attempts else "queued"
        return QueueEntry(
            entry.queueId,
            entry.envelope.sender,
            entry.envelope.recipients,
            entry.envelope.route,
            state,
            entry.attempts,
            entry.created,
            entry.nextAttempt,
            entry.lastError,
            entry.size,
        )

    def _schedule(self, entry: _Entry) -> None:
        entry.ticket = next(self._tickets)
        heapq.heappush(self._due, (entry.nextAttempt, entry.ticket, entry.queueId))

    def _pump(self) -> None:
        """
        Start every due delivery that fits, and wake up for the next one.
        """
        if not self.running:
            return
        now = self._reactor.seconds()
        while self._due and self._inFlight < self._concurrency:
            when, ticket, queueId = self._due[0]
            entry = self._entries.get(queueId)
            if entry is not None and entry.ticket == ticket and when > now:
                break
            heapq.heappop(self._due)
            if entry is not None and entry.ticket == ticket:
                self._start(entry)
        wanted = self._due[0][0] if self._due else None
        if self._inFlight >= self._concurrency:
            wanted = None
        if self._timer is not None and self._timer.active():
            if wanted == self._timerAt:
                return
            self._timer.cancel()
        self._timer = None
        if wanted is not None:
            self._timerAt = wanted
            self._timer = self._reactor.callLater(max(0.0, wanted - now), self._wake)

    def _wake(self) -> None:
        self._timer = None
        self._pump()

    def _start(self, entry: _Entry) -> None:
        entry.active = True
        entry.ticket = -1
        self._inFlight += 1
        source = self._spool.source(entry.queueId)
        attempt = maybeDeferred(self._deliver, entry.envelope, source, entry.queueId)
        attempt.addErrback(self._deliveryBroke, entry)
        attempt.addCallback(self._settle, entry)
        attempt.addErrback(self._settleBroke, entry)
        attempt.addCallback(self._release, entry)

    def _deliveryBroke(self, reason: Failure, entry: _Entry) -> Outcome:
        _log.failure("{queueId}: the delivery failed", reason, queueId=entry.queueId)
        reply = Reply(451, f"4.3.0 local error: {reason.getErrorMessage()}")
        return Outcome("", reply)

    def _settleBroke(self, reason: Failure, entry: _Entry) -> None:
        entry.nextAttempt = self._reactor.seconds() + self._minimalBackoff
        _log.failure(
            "{queueId}: handling the outcome failed; due again at {due}",
            reason,
            queueId=entry.queueId,
            due=utcText(entry.nextAttempt),
        )

    def _release(self, ignored: object, entry: _Entry) -> None:
        entry.active = False
        self._inFlight -= 1
        if self._entries.get(entry.queueId) is entry:
            self._schedule(entry)
        self._pump()

    def _settle(self, outcome: Outcome, entry: _Entry) -> Deferred[None] | None:
        """
        Act on the outcome of an attempt: drop the delivered recipients,
        bounce the refused ones and defer the rest.
        """
        if entry.deleted or not self.running:
            _log.info(
                "{queueId}: outcome {reply} ignored: the message was deleted or "
                "the queue stopped",
                queueId=entry.queueId,
                reply=outcome.reply,
            )
            return None
        now = self._reactor.seconds()
        recipients = entry.envelope.recipients
        delivered = [r for r in recipients if r in outcome.accepted]
        _logAttempt(entry, outcome, delivered)
        replies = {
            r: outcome.refused.get(r, outcome.reply)
            for r in recipients
            if r not in outcome.accepted
        }
        refused = [r for r, reply in replies.items() if reply.isPermanent]
        deferred = [r for r in replies if r not in refused]
        expired = bool(deferred) and now - entry.created > self._lifetime
        if expired:
            _log.info(
                "{queueId}: expired after {age:.0f} seconds in the queue",
                queueId=entry.queueId,
                age=now - entry.created,
            )
            refused, deferred = refused + deferred, []
        if self._onAttempt is not None:
            counts = {
                "delivered": len(delivered),
                "deferred": len(deferred),
                "failed": len(refused),
            }
            route = entry.envelope.route
            self._onAttempt(route, outcome.server, counts, now - entry.created)
        failures = [FailedRecipient(r, replies[r], outcome.server) for r in refused]
        bounced = self._bounce(entry, failures, now, expired)
        bounced.addCallback(lambda _: self._keep(entry, deferred, replies, now))
        return bounced

    def _keep(
        self,
        entry: _Entry,
        deferred: Sequence[str],
        replies: dict[str, Reply],
        now: float,
    ) -> Deferred[None] | None:
        """
        Remove a message that has no recipients left, or schedule the next
        attempt for the ones left.
        """
        queueId = entry.queueId
        if entry.deleted:
            return None
        if not deferred:
            del self._entries[queueId]
            self._spool.remove(queueId)
            if replies:
                # A message delivered to everyone was logged as removed
                # with its delivery.
                _log.info("{queueId}: done, removed from the queue", queueId=queueId)
            return None
        entry.attempts += 1
        exponent = min(entry.attempts - 1, 32)
        delay = min(self._maximalBackoff, self._minimalBackoff * 2**exponent)
        entry.nextAttempt = now + delay
        entry.lastError = str(replies[deferred[0]])
        replaced = None
        if tuple(deferred) != entry.envelope.recipients:
            entry.envelope = evolve(entry.envelope, recipients=deferred)
            replaced = self._spool.replace(queueId, entry.envelope)
        self._spool.update(queueId, entry.attempts, entry.nextAttempt, entry.lastError)
        _log.info(
            "{queueId}: deferred {recipients} until {due}: {reply}",
            queueId=queueId,
            recipients=", ".join(deferred),
            due=utcText(entry.nextAttempt),
            reply=entry.lastError,
        )
        return replaced

    def _bounce(
        self,
        entry: _Entry,
        failures: Sequence[FailedRecipient],
        now: float,
        expired: bool,
    ) -> Deferred[None]:
        """
        Enqueue a bounce for failed recipients, or drop them if the message
        is itself a bounce.

        @return: A L{Deferred} that fires once the bounce is on disk.
        """
        if not failures:
            return succeed(None)
        queueId = entry.queueId
        recipients = ", ".join(failure.recipient for failure in failures)
        if entry.envelope.sender == "":
            _log.info(
                "{queueId}: dropped, not delivered to {recipients}: a bounce is "
                "never bounced",
                queueId=queueId,
                recipients=recipients,
            )
            return succeed(None)
        with self._spool.source(queueId).open() as message:
            headers = headerPart(message.read(_HEADER_LIMIT))
        bounce = buildBounce(
            headers,
            entry.envelope,
            failures,
            queueId=queueId,
            reportingMta=self._hostname,
            arrivalDate=entry.created,
            nowDate=now,
            messageId=f"<{secrets.token_hex(8)}.{queueId}@{self._hostname}>",
            expired=expired,
        )
        envelope = Envelope("", (entry.envelope.sender,), entry.envelope.route)

        def bounced(bounceId: str) -> Deferred[None]:
            _log.info(
                "{queueId}: bounced {recipients} to <{sender}> in {bounceId}",
                queueId=queueId,
                recipients=recipients,
                sender=entry.envelope.sender,
                bounceId=bounceId,
            )
            notice = Bounced(
                queueId, entry.envelope, tuple(failures), bounceId, expired
            )
            return self._onBounce(notice)

        return self.enqueue(envelope, bounce).addCallback(bounced)


def _logAttempt(entry: _Entry, outcome: Outcome, delivered: Sequence[str]) -> None:
    """
    Log how an attempt ended: in one line when every recipient has the
    message, which is then removed from the queue, else in a line for the
    attempt and one for the recipients that have it.
    """
    if len(delivered) == len(entry.envelope.recipients):
        _log.info(
            "{queueId}: delivered to {recipients} via {server} on attempt"
            " {attempt}, removed from the queue: {reply}",
            queueId=entry.queueId,
            recipients=", ".join(delivered),
            server=outcome.server,
            attempt=entry.attempts + 1,
            reply=outcome.reply,
        )
        return
    _log.info(
        "{queueId}: attempt {attempt} via {server} ended with {reply}",
        queueId=entry.queueId,
        attempt=entry.attempts + 1,
        server=outcome.server or "no server",
        reply=outcome.reply,
    )
    if delivered:
        _log.info(
            "{queueId}: delivered to {recipients} via {server}",
            queueId=entry.queueId,
            recipients=", ".join(delivered),
            server=outcome.server,
        )
