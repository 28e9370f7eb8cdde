"""
End-to-end tests of the outgoing-mail engine: a real C{twistd -n ace-mail}
relaying messages submitted through C{POST /v1/outgoing} to two real SMTP
sinks on 127.0.0.1, with sinks and ace-mail killed on purpose.
"""

from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e._harness import (
    AceMail,
    Sink,
    freePort,
    received,
    settled,
    waitFor,
)

_log = Logger()


class _Load:
    """
    Submits numbered test messages from several threads at once and keeps
    the ids of those that ace-mail accepted (answered 202).

    @ivar accepted: Test id to queue id, for each accepted message.
    @ivar refused: How many submissions failed (for example because ace-mail
        had been killed).
    """

    def __init__(self, aceMail: AceMail, prefix: str, count: int) -> None:
        self.aceMail = aceMail
        self.testIds = [f"{prefix}-{n}" for n in range(count)]
        self.accepted: dict[str, str] = {}
        self.refused = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=8)
        self._futures = [self._executor.submit(self._one, t) for t in self.testIds]

    def _one(self, testId: str) -> None:
        try:
            queueId = self.aceMail.submit(testId)
        except (OSError, AssertionError, ValueError):
            with self._lock:
                self.refused += 1
            return
        with self._lock:
            self.accepted[testId] = queueId

    def acceptedCount(self) -> int:
        with self._lock:
            return len(self.accepted)

    def finish(self) -> None:
        """
        Wait (at most 120 s) until every submission has an answer.
        """
        waitFor(
            "every submission to be answered",
            lambda: all(f.done() for f in self._futures),
            120,
        )
        self._executor.shutdown()


class OutgoingEndToEndTests(SynchronousTestCase):
    """
    ace-mail's outgoing path, run for real against two sinks.
    """

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.sink1 = Sink(freePort(), os.path.join(base, "sink1"))
        self.sink2 = Sink(freePort(), os.path.join(base, "sink2"))
        self.aceMail = AceMail(
            os.path.join(base, "data"),
            self.sink1.port,
            self.sink2.port,
            os.path.join(base, "ace-mail.log"),
        )
        self.addCleanup(self.sink1.kill)
        self.addCleanup(self.sink2.kill)
        self.addCleanup(self.aceMail.kill)
        self.prefix = uuid.uuid4().hex[:8]

    def waitFor(self, what: str, condition: Callable[[], bool], timeout: float) -> None:
        """
        L{waitFor}, with the tail of ace-mail's log in the failure.
        """
        try:
            waitFor(what, condition, timeout)
        except AssertionError as e:
            self.fail(f"{e}\nace-mail's log ends with:\n{self.aceMail.logTail()}")

    def waitForDelivery(self, testIds: set[str], timeout: float) -> None:
        """
        Wait until every one of C{testIds} has reached a sink.
        """
        sinks = [self.sink1, self.sink2]
        self.waitFor(
            f"{len(testIds)} messages to reach the sinks",
            lambda: testIds <= set(received(sinks)),
            timeout,
        )

    def test_serverOneKilledMidLoad(self) -> None:
        """
        When server 1 dies (SIGKILL) in the middle of a load, every accepted
        message still arrives, through server 2; a message arrives twice
        only if server 1 had stored it before it died.
        """
        self.sink1.start()
        self.sink2.start()
        self.aceMail.start()
        load = _Load(self.aceMail, self.prefix, 300)
        self.waitFor("100 messages accepted", lambda: load.acceptedCount() >= 100, 60)
        self.waitFor("server 1 to receive mail", lambda: bool(self.sink1.files()), 30)
        self.sink1.kill()
        beforeKill = set(received([self.sink1]))
        load.finish()

        self.assertEqual(load.refused, 0)
        self.assertEqual(len(load.accepted), 300)
        self.waitForDelivery(set(load.accepted), 120)
        copies = received([self.sink1, self.sink2])
        self.assertEqual(set(copies), set(load.accepted))
        throughTwo = set(received([self.sink2]))
        self.assertEqual(set(load.accepted) - beforeKill, throughTwo - beforeKill)
        twice = {t for t, n in copies.items() if n > 1}
        _log.info(
            "server 1 killed after {before} deliveries; {twice} of {accepted} "
            "messages arrived twice",
            before=len(beforeKill),
            twice=len(twice),
            accepted=len(load.accepted),
        )
        self.assertLessEqual(twice, beforeKill)
        self.waitFor("the queue to empty", lambda: not self.aceMail.queue(), 30)

    def test_bothServersDownThenBack(self) -> None:
        """
        While both servers are down, accepted mail waits in the queue as
        deferred, with attempts and the last error listed; once both are
        back, every message is delivered exactly once and the queue empties.
        """
        self.aceMail.start()
        queueIds = {self.aceMail.submit(f"{self.prefix}-{n}") for n in range(20)}
        self.assertEqual(len(queueIds), 20)

        def allDeferred() -> bool:
            entries = {e["queueId"]: e for e in self.aceMail.queue()}
            return set(entries) == queueIds and all(
                e["state"] == "deferred" and e["attempts"] >= 1 and e["lastError"]
                for e in entries.values()
            )

        self.waitFor("all 20 messages listed as deferred", allDeferred, 30)
        self.assertEqual(received([self.sink1, self.sink2]), {})

        self.sink1.start()
        self.sink2.start()
        testIds = {f"{self.prefix}-{n}" for n in range(20)}
        self.waitForDelivery(testIds, 60)
        self.waitFor("the queue to empty", lambda: not self.aceMail.queue(), 30)
        copies = received([self.sink1, self.sink2])
        self.assertEqual(copies, {t: 1 for t in testIds})

    def test_aceMailKilledMidLoad(self) -> None:
        """
        When ace-mail is killed with SIGKILL in the middle of a load and then
        started again on the same data directory, every message it had
        answered 202 arrives whole; a message arrives twice only if a sink
        had it before the kill (it was in flight).
        """
        self.sink1.start()
        self.sink2.start()
        self.aceMail.start()
        load = _Load(self.aceMail, self.prefix, 400)
        self.waitFor("150 messages accepted", lambda: load.acceptedCount() >= 150, 60)
        self.aceMail.kill()
        load.finish()
        settled([self.sink1, self.sink2])
        beforeRestart = set(received([self.sink1, self.sink2]))
        accepted = set(load.accepted)
        self.assertGreaterEqual(len(accepted), 150)

        self.aceMail.start()
        self.waitForDelivery(accepted, 120)
        self.waitFor("the queue to empty", lambda: not self.aceMail.queue(), 60)
        copies = received([self.sink1, self.sink2])
        self.assertLessEqual(accepted, set(copies))
        self.assertLessEqual(set(copies), set(load.testIds))
        twice = {t for t, n in copies.items() if n > 1}
        _log.info(
            "ace-mail killed after {accepted} acceptances and {before} "
            "deliveries; {twice} messages arrived twice: {ids}",
            accepted=len(accepted),
            before=len(beforeRestart),
            twice=len(twice),
            ids=sorted(twice),
        )
        self.assertLessEqual(twice, beforeRestart)
        self.aceMail.stop()
