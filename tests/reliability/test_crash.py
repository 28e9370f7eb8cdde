"""
The crash suite: a real C{twistd -n ace-mail} killed with SIGKILL at random
moments under load, and started again on the same data directory each
time, must still deliver every message it acknowledged.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections import Counter
from typing import Callable

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.e2e._harness import ProxyAceMail, Sink, freePort, settled, waitFor
from tests.e2e._pop3harness import (
    AccountAceMail,
    Dovecot,
    accountConfig,
    answers,
    customerEmail,
    dovecotProgram,
)
from tests.e2e._pop3harness import storedCopies as answerCopies
from tests.reliability._figures import SKIP, record
from tests.reliability._load import (
    LONG,
    REFUSED,
    ApiWorker,
    ContactPool,
    ContactWorker,
    ProxyWorker,
    Tally,
    Worker,
    counts,
)
from tests.reliability._reckon import inFlight, reckon, storedCopies

COMMAND = "tox -e reliability -- tests.reliability.test_crash"
SEED = int(os.environ.get("ACE_RELIABILITY_SEED", "20261203"))
KILLS = 60 if LONG else 22
MINIMUM = 6000 if LONG else 2000
EMAILS = 1000 if LONG else 300
POP3_KILLS = 15 if LONG else 8
PER_WORKER = 15000 if LONG else 5000


class _CrashTestCase(SynchronousTestCase):
    """
    Keeps the test's folder, a sink and the times of the kills.
    """

    skip = SKIP

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.sink = Sink(freePort(), os.path.join(self.base, "sink"))
        self.addCleanup(self.sink.kill)
        self.sink.start()
        self.kills: list[float] = []
        self.rng = random.Random(SEED)

    def waitFor(self, what: str, condition: Callable[[], bool], timeout: float) -> None:
        """
        L{waitFor}, with the tail of ace-mail's log in the failure.
        """
        try:
            waitFor(what, condition, timeout)
        except AssertionError as e:
            self.fail(f"{e}\nace-mail's log ends with:\n{self.aceMail.logTail()}")

    def killAndRestart(
        self,
        uptime: tuple[float, float],
        pause: float,
        probe: Callable[[], int] = lambda: 0,
        whileDown: Callable[[], None] = lambda: None,
    ) -> int:
        """
        Let ace-mail run for a random time within C{uptime} seconds, kill it
        with SIGKILL, leave it down for up to C{pause} seconds, and start it
        again on the same data directory (which waits until it listens).

        @param probe: Measures something just before the kill.
        @param whileDown: Called while ace-mail is down.
        @return: What C{probe} measured.
        """
        time.sleep(self.rng.uniform(*uptime))
        measured = probe()
        self.kills.append(time.time())
        self.aceMail.kill()
        whileDown()
        time.sleep(self.rng.uniform(0, pause))
        self.aceMail.start()
        return measured

    def drained(self, done: Callable[[], bool], timeout: float) -> None:
        """
        Wait (at most C{timeout} seconds) until ace-mail's queue is empty
        and C{done} holds, then until the sink takes no more. A timeout is
        not a failure here: the test then reports what is missing.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self.aceMail.queue() and done():
                    break
            except OSError:
                pass
            time.sleep(0.5)
        settled([self.sink], quiet=1.0, timeout=30)

    def recordFigures(self, section: str, figures: dict[str, object]) -> None:
        for figure, value in figures.items():
            record(section, figure, value, COMMAND)


class ProxyAndApiCrashTests(_CrashTestCase):
    """
    The proxy (pass-through mail and replies to contacts) and the API
    (C{POST /v1/outgoing}) under load while ace-mail is killed again and
    again.
    """

    def test_acknowledgedMessagesSurviveKills(self) -> None:
        """
        Under a load of thousands of messages through the proxy and the API,
        killed with SIGKILL more than 20 times at random moments, ace-mail
        delivers every message it answered 250 or 202 whole to its
        recipient; a message reaches the sink twice only if it was in flight
        at a kill. Every contact it answered 201 for still takes replies.
        """
        self.aceMail = ProxyAceMail(
            os.path.join(self.base, "data"),
            self.sink.port,
            os.path.join(self.base, "ace-mail.log"),
        )
        self.addCleanup(self.aceMail.kill)
        self.aceMail.start()
        tally, pool = Tally(), ContactPool()
        workers: list[Worker] = [
            ContactWorker(self.aceMail, tally, SEED, 0.5, 400, pool=pool),
            ApiWorker(self.aceMail, tally, SEED + 1, 0.05, PER_WORKER),
            ApiWorker(self.aceMail, tally, SEED + 2, 0.05, PER_WORKER),
        ]
        workers += [
            ProxyWorker(
                self.aceMail,
                tally,
                SEED + n,
                0.05,
                PER_WORKER,
                pool=pool,
                replyShare=0.5,
            )
            for n in (3, 4, 5)
        ]
        for worker in workers:
            worker.start()
        self.waitFor("the first contacts", lambda: len(pool) >= 3, 30)
        started = time.monotonic()
        for _ in range(KILLS):
            self.killAndRestart((0.3, 8.0), 0.3)
        self.waitFor(
            f"{MINIMUM} messages acknowledged",
            lambda: len(tally.expected) >= MINIMUM,
            120,
        )
        time.sleep(1.0)
        for worker in workers:
            worker.stopping.set()
        for worker in workers:
            worker.join(60)
        loadTime = time.monotonic() - started

        self.drained(lambda: set(tally.expected) <= set(storedCopies(self.sink)), 120)
        result = reckon(tally, self.sink, self.kills)
        self.recordFigures(
            "Crash: proxy and API",
            {
                "kills survived (SIGKILL at random moments)": len(self.kills),
                "seed of the kill moments": SEED,
                "messages sent": len(tally.sent),
                "sent without an answer, delivered anyway": len(result.unanswered),
                "messages acknowledged (250 or 202)": tally.acknowledgedByKind(),
                "messages lost": len(result.lost),
                "duplicates (in flight at a kill)": f"{len(result.duplicated)} "
                f"({len(result.inFlight)})",
                "damaged or misrouted copies": len(result.damaged)
                + len(result.misrouted),
                "contacts made (201), refused later": f"{len(pool)}, "
                f"{sum(n for k, n in tally.errors.items() if k.startswith(REFUSED))}",
                "load time": f"{loadTime:.0f} s",
                "failed operations, by kind": counts(tally.errors),
            },
        )
        self.assertEqual(result.problems(), "", self.aceMail.logTail())
        self.assertGreaterEqual(len(self.kills), 20)
        self.assertGreaterEqual(len(tally.expected), MINIMUM)
        refused = [k for k in tally.errors if k.startswith(REFUSED)]
        self.assertEqual(refused, [], "a contact answered 201 was refused later")
        self.aceMail.stop()


def atLeast(sink: Sink, count: int) -> Callable[[], bool]:
    """
    @return: Whether C{sink} holds answers to C{count} customers.
    """
    return lambda: len({a.recipients for a in answers(sink)}) >= count


class Pop3CrashTests(_CrashTestCase):
    """
    The intake of a full POP3 mailbox while ace-mail is killed again and
    again.
    """

    def test_intakeSurvivesKills(self) -> None:
        """
        Killed with SIGKILL at random points while it takes hundreds of
        emails from a Dovecot mailbox and answers them, and started again
        each time, ace-mail ends with an empty mailbox, exactly one contact
        per email and one automatic answer per contact. An answer is at the
        sink twice only as the same bytes, first stored within two seconds
        of a kill.
        """
        if dovecotProgram() is None and not os.environ.get("CI"):
            raise SkipTest("dovecot is not installed; .ci/run installs it")
        dovecot = Dovecot()
        self.addCleanup(dovecot.stop)
        dovecot.start()
        tag = uuid.uuid4().hex[:12]
        emails = [customerEmail(tag, n) for n in range(EMAILS)]
        config = os.path.join(self.base, "ace-mail.toml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(accountConfig(dovecot, autoAnswerLimit=10, pollInterval="0.2s"))
        self.aceMail = aceMail = AccountAceMail(
            os.path.join(self.base, "data"),
            self.sink.port,
            os.path.join(self.base, "ace-mail.log"),
            config,
        )
        self.addCleanup(self.aceMail.kill)

        # Each kill comes at a random point of the intake: once a random
        # number of the emails have their answer at the sink.
        dovecot.deliver(e.content for e in emails)
        self.aceMail.start()
        inMailboxAtKill = []
        for point in sorted(self.rng.sample(range(1, len(emails)), POP3_KILLS)):
            self.waitFor(f"{point} answers", atLeast(self.sink, point), 120)
            inMailboxAtKill.append(
                self.killAndRestart((0.0, 0.0), 0.0, dovecot.waiting)
            )

        customers = {e.address for e in emails}
        self.drained(
            lambda: dovecot.waiting() == 0
            and {a.recipients[0] for a in answers(self.sink)} >= customers,
            180,
        )
        contacts = Counter(
            c["customer"].rpartition("<")[2].rstrip(">") for c in aceMail.contacts()
        )
        got = answers(self.sink)
        perCustomer = Counter((a.recipients, str(a.headers["Message-ID"])) for a in got)
        differentAnswers = Counter(r for r, _ in perCustomer)
        copies = answerCopies(self.sink)
        resent = {m: c for m, c in copies.items() if len(c) > 1}
        explained = [m for m, c in resent.items() if inFlight(c, self.kills)]
        lost = customers - set(contacts) | customers - {a.recipients[0] for a in got}
        self.recordFigures(
            "Crash: POP3 intake",
            {
                "kills survived (SIGKILL at random points of the intake)": len(
                    self.kills
                ),
                "seed of the kill moments": SEED,
                "kills with mail still in the mailbox": sum(
                    1 for n in inMailboxAtKill if n
                ),
                "emails in the mailbox": len(emails),
                "emails lost (no contact or no answer)": len(lost),
                "duplicate contacts": sum(n - 1 for n in contacts.values()),
                "customers with a second, different answer": sum(
                    1 for n in differentAnswers.values() if n > 1
                ),
                "answers stored twice (in flight at a kill)": f"{len(resent)} "
                f"({len(explained)})",
            },
        )
        self.assertEqual(sorted(lost), [], self.aceMail.logTail())
        self.assertEqual(dovecot.waiting(), 0)
        self.assertEqual([c for c, n in contacts.items() if n > 1], [])
        self.assertEqual(set(contacts), customers)
        self.assertEqual([r for r, n in differentAnswers.items() if n > 1], [])
        self.assertEqual(sorted(set(resent) - set(explained)), [])
        self.assertGreaterEqual(len(self.kills), 5)
        self.aceMail.stop()
