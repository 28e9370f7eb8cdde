"""
Tests that intake is exactly once: a crash at any step, a restart from disk,
a recovery and another poll give the same contacts, one automatic answer and
one physical email each.
"""

from __future__ import annotations

from typing import Any, Callable

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.intake import IntakeResult
from tests.intakeharness import SALES, SALES_ACCOUNT, Harness, email


class Crash(Exception):
    """
    The process died here.
    """


class Crasher:
    """
    Counts the steps of a run, dies at one of them, and stays dead.

    @ivar at: The step to die at, counted from 1; 0 for none.
    """

    def __init__(self, at: int) -> None:
        self.at = at
        self.count = 0
        self.dead = False

    def step(self, name: str) -> None:
        if self.dead:
            raise Crash(f"dead before {name}")
        self.count += 1
        if self.count == self.at:
            self.dead = True
            raise Crash(name)


class Dying:
    """
    A store or queue whose named methods pass a step of a L{Crasher} before
    and after they work: a crash after a step is a crash once its effect is
    on disk.
    """

    def __init__(
        self, target: Any, crasher: Crasher, methods: set[str], enqueued: list[str]
    ) -> None:
        self._target = target
        self._crasher = crasher
        self._methods = methods
        self._enqueued = enqueued

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if name not in self._methods:
            return attribute

        def step(*args: Any, **kwargs: Any) -> Any:
            self._crasher.step(f"before {name}")
            result = attribute(*args, **kwargs)
            if isinstance(result, Deferred) and not result.called:
                raise AssertionError("a step that does not end at once")
            if name == "enqueue":
                result.addCallback(self._noteEnqueued)
            self._crasher.step(f"after {name}")
            return result

        return step

    def _noteEnqueued(self, queueId: str) -> str:
        self._enqueued.append(queueId)
        return queueId


def dyingWith(crasher: Crasher, enqueued: list[str]) -> Callable[[Any], Any]:
    """
    @param enqueued: Gets the queue id of every message enqueued.
    """
    steps = {"seen", "recordArrival", "settleDispatch", "enqueue"}

    def wrap(part: Any) -> Any:
        return Dying(part, crasher, steps, enqueued)

    return wrap


class ExactlyOnceTests(SynchronousTestCase):
    """
    Intake survives a crash at any step without losing or repeating work.
    """

    def poll(
        self,
        harness: Harness,
        server: dict[str, bytes],
        crasher: Crasher,
        pace: float = 2.0,
    ) -> None:
        """
        Take every message on the server, as the POP3 poller does: skip and
        delete the ones seen, write each new one to a file, take it and
        delete it once taken.

        @param pace: The seconds between two takes; deliveries take one.
        """
        for uidl, data in list(server.items()):
            seen = harness.intake.seen(SALES_ACCOUNT.name, uidl)
            if self.successResultOf(seen):
                del server[uidl]
                continue
            path = harness.write(data)
            crasher.step("written")
            outcome: list[IntakeResult | Failure] = []
            harness.intake.take(SALES_ACCOUNT, uidl, path).addBoth(outcome.append)
            harness.clock.advance(pace)
            if isinstance(outcome[0], Failure):
                outcome[0].raiseException()
            del server[uidl]

    @given(
        count=st.integers(min_value=1, max_value=4),
        crashAt=st.integers(min_value=1, max_value=45),
        renumbered=st.booleans(),
        pace=st.sampled_from([0.5, 2.0]),
    )
    def test_crashRestartPollAgain(
        self, count: int, crashAt: int, renumbered: bool, pace: float
    ) -> None:
        """
        Crash at a random step (after the file is written, before or after
        the UIDL check, the rename and transaction, the enqueue or the
        mark), rebuild the intake, the store and the queue from disk,
        recover and poll again (with the server's UIDLs changed or not):
        every email is one contact, with exactly one automatic answer and
        one physical email to the agent mailbox, counted over what the
        queue delivered and what it still holds, and no queue id is
        enqueued twice, whether its delivery had ended before the crash
        (C{pace} 2) or not (C{pace} 0.5).
        """
        customers = [f"customer{n}@example.net" for n in range(count)]
        messages = {
            f"uidl-{n}": email(sender=customer, messageId=f"<m{n}@example.net>")
            for n, customer in enumerate(customers)
        }
        server = dict(messages)
        crasher = Crasher(crashAt)
        enqueued: list[str] = []
        harness = Harness(
            self.mktemp(), entrances=(SALES,), wrap=dyingWith(crasher, enqueued)
        )
        try:
            self.poll(harness, server, crasher, pace)
        except Crash:
            pass
        self.flushLoggedErrors(Crash)

        harness.stop()
        harness.wrap = dyingWith(Crasher(0), enqueued)
        harness.start()
        self.successResultOf(harness.intake.recover())
        if renumbered:
            server = {f"new-{uidl}": data for uidl, data in server.items()}
        self.poll(harness, server, Crasher(0))
        harness.clock.advance(10)

        self.assertEqual(server, {})
        contacts = harness.contacts()
        self.assertEqual(sorted(row[1] for row in contacts), sorted(customers))
        answers: dict[str, int] = {}
        physical: dict[str, int] = {}
        for envelope, data in harness.sent().values():
            if envelope.recipients == (SALES.agentMailbox,):
                contactId = data.split(b"@", 1)[0].rsplit(b"<", 1)[1].decode()
                physical[contactId] = physical.get(contactId, 0) + 1
            else:
                (customer,) = envelope.recipients
                answers[customer] = answers.get(customer, 0) + 1
        self.assertEqual(answers, {customer: 1 for customer in customers})
        self.assertEqual(len(enqueued), len(set(enqueued)))
        self.assertEqual(len(enqueued), 2 * count)
        self.assertEqual(physical, {row[0]: 1 for row in contacts})
        self.assertEqual(self.successResultOf(harness.store.pendingDispatches()), [])
        harness.stop()
