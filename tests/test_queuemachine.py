"""
A hypothesis state machine over L{ace_mail.queue.Queue} and its spool: no
accepted message is ever lost or sent half-written, through crashes.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.envelope import Envelope, MessageSource, Outcome
from ace_mail.queue import Queue
from ace_mail.spool import Spool

from .test_queue import LATER, NO, OK, START, Call
from .test_spool import HeldRunner

_SEGMENT = re.compile(r"seg-\d{8}")


class QueueMachine(RuleBasedStateMachine):
    """
    Enqueue, commit, deliver, fail, wait and crash, in any order.

    The spool's commits are held until the rule C{commit} runs them, so an
    enqueue is acknowledged only then; a crash drops the objects without
    closing them cleanly, and may first run the next held commit only in
    part, as a torn write.
    """

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="queuemachine-", dir=os.getcwd())
        self.runner = HeldRunner()
        self.now = START
        self.calls: list[Call] = []
        self.accepted: dict[str, tuple[Envelope, bytes]] = {}
        self.attempted: set[bytes] = set()
        self.delivered: set[tuple[str, str]] = set()
        self.refused: set[tuple[str, str]] = set()
        self.reported: set[tuple[str, str]] = set()
        self.counter = 0
        self.start()

    def start(self) -> None:
        self.clock = Clock()
        self.clock.advance(self.now)
        self.spool = Spool.open(self.directory, self.runner, segmentSize=4096)
        self.queue = Queue(
            self.clock,
            self.spool,
            self.deliver,
            lifetime=3000.0,
            concurrency=2,
            hostname="mx.example.com",
        )
        self.queue.startService()

    def deliver(
        self, envelope: Envelope, source: MessageSource, queueId: str
    ) -> Deferred[Outcome]:
        """
        Record a delivery after checking that its bytes are whole.
        """
        with source.open() as stream:
            data = stream.read()
        assert len(data) == source.size
        if queueId in self.accepted:
            original, accepted = self.accepted[queueId]
            assert data == accepted, queueId
            assert set(envelope.recipients) <= set(original.recipients)
        elif data not in self.attempted:
            self.readBounce(data)
        call = Call(envelope, data, queueId, Deferred())
        self.calls.append(call)
        return call.result

    def readBounce(self, data: bytes) -> None:
        assert data.startswith(b"From: Mail Delivery System"), data[:100]
        assert data.endswith(b"--\r\n"), data[-100:]
        [queueId] = re.findall(rb"X-Ace-Mail-Queue-ID: (\S+)", data)
        for recipient in re.findall(rb"Final-Recipient: rfc822; (\S+)", data):
            self.reported.add((queueId.decode(), recipient.decode()))

    @rule(
        recipients=st.integers(1, 3),
        null=st.booleans(),
        size=st.sampled_from([0, 10, 700, 3000]),
    )
    def enqueue(self, recipients: int, null: bool, size: int) -> None:
        self.counter += 1
        data = b"Subject: %d\r\n\r\n" % self.counter + b"x" * size
        envelope = Envelope(
            "" if null else "sender@example.com",
            [f"r{n}@example.net" for n in range(recipients)],
        )
        self.attempted.add(data)
        added = self.queue.enqueue(envelope, data)
        added.addCallback(self.accepted.__setitem__, (envelope, data))

    @precondition(lambda self: self.runner.jobs)
    @rule()
    def commit(self) -> None:
        while self.runner.jobs:
            self.runner.runOne()

    @precondition(lambda self: self.calls)
    @rule(
        index=st.integers(0, 10),
        kind=st.sampled_from(["delivered", "temporary", "permanent", "mixed"]),
    )
    def finish(self, index: int, kind: str) -> None:
        call = self.calls.pop(index % len(self.calls))
        recipients = call.envelope.recipients
        if kind == "delivered":
            outcome = Outcome("s1", OK, accepted=recipients)
        elif kind == "mixed":
            refused = dict(zip(recipients[1:], [LATER, NO], strict=False))
            outcome = Outcome("s1", OK, accepted=recipients[:1], refused=refused)
        else:
            reply = LATER if kind == "temporary" else NO
            outcome = Outcome("s1", reply, refused=dict.fromkeys(recipients, reply))
        self.delivered.update((call.queueId, r) for r in outcome.accepted)
        self.refused.update((call.queueId, r) for r in outcome.refused)
        call.result.callback(outcome)

    @precondition(lambda self: self.queue.list())
    @rule(seconds=st.sampled_from([1.0, 299.0, 300.0, 1200.0, 4000.0]))
    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.clock.advance(seconds)

    @precondition(lambda self: self.runner.jobs or self.queue.list())
    @rule(tear=st.booleans(), cut=st.floats(0.0, 1.0))
    def crash(self, tear: bool, cut: float) -> None:
        """
        Drop everything as a kill -9 would; with C{tear}, run the next held
        commit and then cut what it wrote at a fraction C{cut}.
        """
        if tear and self.runner.jobs:
            work, ignored = self.runner.jobs[0]
            before = self.sizes()
            for fd in work().values():
                os.close(fd)
            for name, size in self.sizes().items():
                if size > before.get(name, 0):
                    keep = before.get(name, 0) + int((size - before.get(name, 0)) * cut)
                    os.truncate(os.path.join(self.directory, name), keep)
        for segment in self.spool._segments.values():
            os.close(segment.fd)
        os.close(self.spool._directoryFd)
        self.runner.jobs.clear()
        self.calls.clear()
        self.start()

    def sizes(self) -> dict[str, int]:
        return {
            name: os.path.getsize(os.path.join(self.directory, name))
            for name in os.listdir(self.directory)
            if _SEGMENT.fullmatch(name)
        }

    def covered(self, inQueue: bool) -> None:
        for entry in self.queue.list():
            if entry.sender == "" and entry.queueId not in self.accepted:
                with self.spool.source(entry.queueId).open() as stream:
                    data = stream.read()
                if data not in self.attempted:
                    self.readBounce(data)
        for queueId, (envelope, _data) in self.accepted.items():
            entry = self.queue.get(queueId) if inQueue else None
            remaining = entry.recipients if entry is not None else ()
            for recipient in envelope.recipients:
                done = (queueId, recipient) in self.delivered | self.reported
                dropped = envelope.sender == "" and (queueId, recipient) in self.refused
                assert done or dropped or recipient in remaining, (queueId, recipient)

    @invariant()
    def nothingLost(self) -> None:
        """
        Each recipient of each accepted message was delivered to, is still
        queued, or was reported in a bounce (or dropped, for a bounce).
        """
        self.covered(inQueue=True)

    def teardown(self) -> None:
        """
        Deliver everything that is left; then no accepted message may be
        waiting.
        """
        for _ignored in range(100):
            self.commit()
            while self.calls:
                self.finish(0, "delivered")
            if not self.queue.list() and not self.runner.jobs:
                break
            self.wait(4000.0)
        self.covered(inQueue=False)
        closed = self.queue.stopService()
        self.commit()
        results: list[Any] = []
        closed.addBoth(results.append)
        assert results == [None], results


class QueueMachineTests(SynchronousTestCase):
    """
    The queue keeps its promise through any sequence of events.
    """

    def test_neverLostNorHalfSent(self) -> None:
        """
        Through enqueues, commits, deliveries, failures, waits and crashes
        (some tearing a commit), every acknowledged message is delivered,
        queued or bounced, and every delivery carries whole bytes.
        """
        run_state_machine_as_test(
            QueueMachine, settings=settings(max_examples=150, stateful_step_count=50)
        )
