"""
End-to-end tests of scale-out: two real C{twistd -n ace-mail} nodes share
one real PostgreSQL store and poll one real Dovecot mailbox, with one
aiosmtpd sink as the SMTP server behind both.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from typing import Any, Callable

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.e2e._harness import Delivery, Sink, freePort, settled, waitFor
from tests.e2e._nodes import (
    Node,
    PostgresControl,
    logTails,
    pause,
    rcptReply,
    send,
    startTogether,
)
from tests.e2e._pop3harness import (
    Answer,
    CustomerEmail,
    Dovecot,
    accountConfig,
    answers,
    customerEmail,
    dovecotProgram,
    storedCopies,
)
from tests.e2e.test_proxy import (
    AGENT,
    CUSTOMER,
    CUSTOMER_ADDRESS,
    ELSEWHERE,
    ENTRANCE_ADDRESS,
    ORIGINAL_ID,
    agentReply,
    header,
    headerAddresses,
    revealed,
)
from tests.pgharness import schemaDsn

LEASE = 4.0
"""
The nodes' C{--accountLease}, in seconds: short, so that a takeover is
quick to see.
"""

TAKEOVER = LEASE + LEASE / 4
"""
How long after a node dies another node at most takes its account over:
the dead node's lease runs out, and the other's keeper, which renews every
quarter of the lease, takes it.
"""

MARGIN = 3.0
"""
The slack, in seconds, that a loaded test machine gets beyond a bound the
design sets.
"""


class _ScaleOutTestCase(SynchronousTestCase):
    """
    Gives each test its own PostgreSQL schema, a Dovecot mailbox, a sink,
    and a config file whose entrance C{acme} polls the mailbox every half
    second; each test starts the nodes it needs on them.
    """

    def setUp(self) -> None:
        if dovecotProgram() is None and not os.environ.get("CI"):
            raise SkipTest("dovecot is not installed; .ci/run installs it")
        self.store = schemaDsn(self, "scaleout")
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.tag = uuid.uuid4().hex[:12]
        self.nodes: list[Node] = []
        self.dovecot = Dovecot()
        self.addCleanup(self.dovecot.stop)
        self.dovecot.start()
        self.sink = Sink(freePort(), os.path.join(self.base, "sink"))
        self.addCleanup(self.sink.kill)
        self.sink.start()
        self.configPath = os.path.join(self.base, "ace-mail.toml")
        with open(self.configPath, "w", encoding="utf-8") as f:
            f.write(accountConfig(self.dovecot, autoAnswerLimit=10))

    def startNodes(self, *labels: str) -> list[Node]:
        """
        Start one node for each label, all at once, on the test's store with
        a lease of L{LEASE} seconds.
        """
        made = [
            Node(
                label,
                self.base,
                self.sink.port,
                self.configPath,
                self.store,
                ["--accountLease", f"{LEASE:g}s"],
            )
            for label in labels
        ]
        for node in made:
            self.addCleanup(node.kill)
        self.nodes += made
        try:
            startTogether(made)
        except AssertionError as e:
            self.fail(f"{e}\n{logTails(made)}")
        return made

    def emails(self, count: int, first: int = 0) -> list[CustomerEmail]:
        """
        Put C{count} customer emails, each from its own customer, into the
        mailbox.
        """
        made = [customerEmail(self.tag, n) for n in range(first, first + count)]
        self.dovecot.deliver(e.content for e in made)
        return made

    def waitFor(self, what: str, condition: Callable[[], bool], timeout: float) -> None:
        """
        L{waitFor}, with the tails of every node's log and of Dovecot's in
        the failure.
        """
        try:
            waitFor(what, condition, timeout)
        except AssertionError as e:
            self.fail(
                f"{e}\n{logTails(self.nodes)}\n"
                f"dovecot's log ends with:\n{self.dovecot.logTail()}"
            )

    def deliveredTo(self, address: str) -> list[Delivery]:
        """
        @return: The messages the sink holds for C{address}.
        """
        return [d for d in self.sink.deliveries() if address in d.recipients]

    def sentTo(self, address: str, count: int, timeout: float = 30) -> list[Delivery]:
        """
        Wait until the sink holds at least C{count} messages for C{address}.

        @return: Those messages.
        """
        self.waitFor(
            f"{count} messages for {address} at the sink",
            lambda: len(self.deliveredTo(address)) >= count,
            timeout,
        )
        return self.deliveredTo(address)

    def answeredEach(self, count: int, timeout: float) -> list[Answer]:
        """
        Wait until the sink holds C{count} distinct automatic answers (told
        apart by Message-ID), then until it takes no more.

        @return: Every automatic answer the sink holds.
        """
        self.waitFor(
            f"{count} messages at the sink",
            lambda: len(self.sink.files()) >= count,
            timeout,
        )
        self.waitFor(
            f"{count} distinct automatic answers at the sink",
            lambda: len({str(x.headers["Message-ID"]) for x in answers(self.sink)})
            >= count,
            30,
        )
        settled([self.sink], quiet=1.0, timeout=30)
        return answers(self.sink)

    def assertOneAnswerEach(
        self, got: list[Answer], sent: list[CustomerEmail], contactIds: set[str]
    ) -> None:
        """
        Each email got exactly one automatic answer (told apart by
        Message-ID), threaded under it and sent to its customer, and the
        answers name exactly the contacts C{contactIds}.
        """
        distinct = {str(a.headers["Message-ID"]): a for a in got}.values()
        replyTo = Counter(str(a.headers["In-Reply-To"]) for a in distinct)
        self.assertEqual([m for m, n in replyTo.items() if n > 1], [])
        self.assertEqual(set(replyTo), {e.messageId for e in sent})
        customers = {a.recipients for a in distinct}
        self.assertEqual(customers, {(e.address,) for e in sent})
        self.assertEqual(len({a.contactId for a in distinct}), len(sent))
        self.assertEqual({a.contactId for a in distinct}, contactIds)


class SharedContactTests(_ScaleOutTestCase):
    """
    Contacts live in the shared store: any node's proxy finds the contacts
    any node made.
    """

    def test_contactOfOneNodeRepliedThroughTheOther(self) -> None:
        """
        A contact made through one node's API is found at once by the other
        node's proxy, both ways round: a reply to its address sent through
        the other node as soon as the API answered 201 is accepted within a
        second, and reaches the customer from the entrance's address,
        threaded under the customer's email and without the agent's address.
        """
        a, b = self.startNodes("A", "B")
        for maker, relay in [(a, b), (b, a)]:
            contact = maker.createContact(CUSTOMER, "My order", ORIGINAL_ID)
            created = time.monotonic()
            reply = agentReply(contact["address"], f"Re: via {relay.label}")
            self.assertEqual(send(relay, AGENT, contact["address"], reply), {})
            accepted = time.monotonic() - created
            self.assertLess(accepted, 1.0, f"node {relay.label} took {accepted:.2f}s")

        copies = self.sentTo(CUSTOMER_ADDRESS, 2)
        settled([self.sink], quiet=0.5, timeout=10)
        self.assertEqual(len(self.sink.deliveries()), 2)
        self.assertEqual(
            sorted(header(c.content, "Subject") for c in copies),
            ["Re: via A", "Re: via B"],
        )
        for copy in copies:
            self.assertEqual(copy.recipients, (CUSTOMER_ADDRESS,))
            self.assertEqual(copy.mailFrom, ENTRANCE_ADDRESS)
            self.assertEqual(
                headerAddresses(copy.content, "From"), [("Support", ENTRANCE_ADDRESS)]
            )
            self.assertEqual(header(copy.content, "In-Reply-To"), ORIGINAL_ID)
            self.assertEqual(revealed(copy.content, AGENT), [])


class SharedAccountTests(_ScaleOutTestCase):
    """
    Two nodes poll the same account; the lease and the shared intake
    records make each email one contact with one answer.
    """

    def test_thousandEmailsTwoNodesExactlyOnce(self) -> None:
        """
        With 1,000 emails in the mailbox and two nodes started together
        polling it, the mailbox is emptied into exactly 1,000 contacts, the
        same through either node's API, and exactly 1,000 automatic answers,
        one to each email; one node says it holds the account's lease, the
        other that another node holds it.
        """
        sent = self.emails(1000)
        a, b = self.startNodes("A", "B")

        got = self.answeredEach(1000, 150)
        self.assertEqual(self.dovecot.waiting(), 0)
        self.assertEqual(len(got), 1000)
        listed = {c["id"] for c in a.contacts()}
        self.assertEqual(len(listed), 1000)
        self.assertEqual({c["id"] for c in b.contacts()}, listed)
        self.assertOneAnswerEach(got, sent, listed)
        self.assertNotEqual(a.nodeName(), b.nodeName())
        self.assertEqual(
            sorted(node.lease() == "held by another node" for node in (a, b)),
            [False, True],
        )
        self.assertEqual(sorted(node.holdsLease() for node in (a, b)), [False, True])


class TakeoverTests(_ScaleOutTestCase):
    """
    A node killed while it takes a large mailbox: the other node takes the
    account over once the lease runs out.
    """

    def test_killedNodesIntakeFinishedByTheOther(self) -> None:
        """
        Node A is killed with SIGKILL after it took about 100 of 500 emails
        while node B waits for the account's lease; B takes the lease within
        the lease time and a quarter of it, and empties the mailbox into exactly 500 contacts,
        one per email. When A starts again with its data directory, it sends
        the answers it had not sent, so that every contact has exactly one
        automatic answer (a copy stored twice only when A died before it
        read the sink's 250 for it, within two seconds of the kill).
        """
        sent = self.emails(500)
        [a] = self.startNodes("A")
        self.waitFor("node A to take a first email", lambda: a.taken() > 0, 30)
        [b] = self.startNodes("B")
        self.waitFor("node A to take 100 emails", lambda: a.taken() >= 100, 60)
        self.assertEqual(b.lease(), "held by another node")
        self.assertEqual(b.taken(), 0, "node B polled while node A held the lease")
        waiting = self.dovecot.waiting()
        a.kill()
        killed = time.monotonic()
        killedAt = time.time()
        self.assertGreater(waiting, 0, "the mailbox was empty at the kill")

        self.waitFor("node B to take the lease", b.holdsLease, TAKEOVER + 30)
        takeover = time.monotonic() - killed
        self.assertLessEqual(
            takeover, TAKEOVER + MARGIN, f"node B took the lease after {takeover:.1f}s"
        )
        self.waitFor(
            "node B to empty the mailbox into 500 contacts",
            lambda: self.dovecot.waiting() == 0 and len(b.contacts()) >= 500,
            90,
        )
        listed = b.contacts()
        self.assertEqual(len(listed), 500)
        customers = Counter(c["customer"] for c in listed)
        self.assertEqual([c for c, n in customers.items() if n > 1], [])

        a.start()
        got = self.answeredEach(500, 60)
        self.assertOneAnswerEach(got, sent, {c["id"] for c in listed})
        self.assertEqual({c["id"] for c in a.contacts()}, {c["id"] for c in listed})
        for messageId, copies in storedCopies(self.sink).items():
            if len(copies) > 1:
                self.assertEqual(len(copies), 2, messageId)
                self.assertEqual(copies[0][1], copies[1][1], messageId)
                self.assertLessEqual(abs(copies[0][0] - killedAt), 2, messageId)


class OutageTests(_ScaleOutTestCase):
    """
    The shared PostgreSQL server stops for ten seconds and starts again.
    """

    def setUp(self) -> None:
        self.postgres = PostgresControl.fromEnvironment(self)
        super().setUp()
        self.addCleanup(self.postgres.ensureRunning)

    def reply(self, node: Node, address: str, subject: str) -> dict[str, Any]:
        """
        Send an agent's reply to a contact address through a node's proxy.

        @return: The recipients the proxy refused.
        """
        return send(node, AGENT, address, agentReply(address, subject))

    def test_outageRefusesRepliesRelaysOthersAndResumes(self) -> None:
        """
        While PostgreSQL is stopped for ten seconds, both nodes keep running:
        their proxies accept pass-through mail and deliver it, answer 451 to
        a reply for a contact address, the account's status says that the
        store does not answer, and intake leaves a new email in the mailbox.
        Once the server is back, the nodes take replies to contact addresses
        again by themselves, the reply is delivered, and the email that
        waited becomes a contact with an automatic answer; every message a
        proxy accepted reaches the sink exactly once.
        """
        [before] = self.emails(1)
        a, b = self.startNodes("A", "B")
        contact = a.createContact(CUSTOMER, "My order", ORIGINAL_ID)
        self.waitFor(
            "the first email's answer", lambda: len(answers(self.sink)) == 1, 30
        )
        self.assertEqual(self.reply(b, contact["address"], "Re: before the outage"), {})

        self.postgres.stop()
        stopped = time.monotonic()
        for node in (a, b):
            testId = f"{self.tag}-{node.label}"
            passing = (
                f"From: <{AGENT}>\r\nTo: <{ELSEWHERE}>\r\nSubject: pass {testId}\r\n"
                f"Message-ID: <{testId}@agents.example>\r\n\r\nPassing through.\r\n"
            )
            self.assertEqual(send(node, AGENT, ELSEWHERE, passing.encode()), {})
        for node in (a, b):
            code, text = rcptReply(node, AGENT, contact["address"])
            self.assertEqual(code, 451, f"node {node.label}: {code} {text}")
        [during] = self.emails(1, first=1)
        self.waitFor(
            "both nodes to say that the store does not answer",
            lambda: all(
                str(node.lease()).startswith("store unreachable") for node in (a, b)
            ),
            LEASE,
        )
        self.waitFor(
            "both pass-through messages at the sink",
            lambda: len(self.deliveredTo(ELSEWHERE)) == 2,
            8,
        )
        pause(stopped + 10)
        self.assertEqual(
            self.dovecot.waiting(), 1, "intake took an email during the outage"
        )
        code, text = rcptReply(b, AGENT, contact["address"])
        self.assertEqual(code, 451, f"at the end of the outage: {code} {text}")
        self.assertTrue(a.running() and b.running(), logTails(self.nodes))
        self.postgres.start()

        self.waitFor(
            "node A to take replies to contact addresses again",
            lambda: rcptReply(a, AGENT, contact["address"])[0] == 250,
            30,
        )
        self.assertEqual(self.reply(a, contact["address"], "Re: after the outage"), {})
        self.waitFor(
            "intake to take the email that came during the outage",
            lambda: len(b.contacts()) == 3 and self.dovecot.waiting() == 0,
            TAKEOVER + 30,
        )
        self.waitFor("its automatic answer", lambda: len(answers(self.sink)) == 2, 30)
        self.sentTo(CUSTOMER_ADDRESS, 2)
        settled([self.sink], quiet=1.0, timeout=30)

        copies = storedCopies(self.sink)
        self.assertEqual([m for m, c in copies.items() if len(c) > 1], [])
        self.assertEqual(len(copies), 6)
        got = answers(self.sink)
        self.assertEqual(
            sorted(str(x.headers["In-Reply-To"]) for x in got),
            sorted([before.messageId, during.messageId]),
        )
        replies = {
            header(d.content, "Subject")
            for d in self.deliveredTo(CUSTOMER_ADDRESS)
            if d.mailFrom == ENTRANCE_ADDRESS
        }
        self.assertEqual(replies, {"Re: before the outage", "Re: after the outage"})
        self.assertEqual(
            {header(d.content, "Subject") for d in self.deliveredTo(ELSEWHERE)},
            {f"pass {self.tag}-A", f"pass {self.tag}-B"},
        )
