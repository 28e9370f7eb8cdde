"""
Tests for L{ace_mail.accounts.AccountPoller}: whole polls against
Twisted's own POP3 server in memory.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ace_mail._entrances import AccountConfig
from ace_mail.accounts import AccountPoller, _tls
from tests.pop3fakes import (
    FakeIntake,
    MemoryMailbox,
    MemoryNetwork,
    PretendTLS,
    ServerScript,
    makeAccount,
)

MESSAGES = [
    ("uid-1", b"Subject: one\n\nfirst\n"),
    ("uid-2", b"Subject: two\n\n.starts with a dot\n..and two\n.\n"),
    ("uid-3", b"Subject: three\n\n" + b"x" * 5000 + b"\n"),
]


def crlf(content: bytes) -> bytes:
    """
    @return: C{content} with CRLF line ends, as the server sends it.
    """
    return content.replace(b"\n", b"\r\n")


class PollerTestCase(SynchronousTestCase):
    """
    An account of a L{MemoryMailbox} served by Twisted's POP3 server.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[Any] = []
        self.mailbox = MemoryMailbox(MESSAGES, self.events)
        self.script = ServerScript()
        self.network = MemoryNetwork(self.clock, self.mailbox, self.script)
        self.intake = FakeIntake(self.mktemp(), self.events)
        self.clientTLS = PretendTLS()
        self.tlsAccounts: list[AccountConfig] = []

        def clientTLSOptions(account: AccountConfig) -> Any:
            self.tlsAccounts.append(account)
            return self.clientTLS

        self.patch(_tls, "clientTLSOptions", clientTLSOptions)

    def poller(self, **changes: Any) -> AccountPoller:
        return AccountPoller(
            self.clock,
            makeAccount(**changes),
            self.intake,
            endpointFactory=self.network.endpointFor,
        )

    def poll(self, poller: AccountPoller) -> None:
        done = poller.pollNow()
        self.network.flush()
        self.successResultOf(done)

    def deleted(self) -> list[str]:
        return [uid for event, uid in self.events if event == "DELE"]

    def assertAllTaken(self, poller: AccountPoller) -> None:
        self.assertEqual(
            self.intake.contents, {uid: crlf(content) for uid, content in MESSAGES}
        )
        self.assertEqual(poller.status().lastResult, "ok")
        self.assertEqual(poller.status().messagesTaken, 3)


class NormalPollTests(PollerTestCase):
    """
    Polls that go as they should.
    """

    def test_takesEveryMessage(self) -> None:
        """
        A poll hands every message, dot-unstuffed with CRLF line ends, to
        intake, then deletes them all and says QUIT.
        """
        poller = self.poller()
        self.poll(poller)

        self.assertAllTaken(poller)
        self.assertEqual(self.mailbox.messages, [])
        self.assertEqual(self.events[-1], ("QUIT", 3))
        self.assertEqual(os.listdir(self.intake.incomingDir), [])
        status = poller.status()
        self.assertEqual(
            (status.errors, status.consecutiveFailures, status.lastPoll), (0, 0, 0)
        )
        self.assertFalse(status.polling)

    def test_deleteOnlyAfterTake(self) -> None:
        """
        No message is deleted before intake's C{take} for it has fired.
        """
        self.intake.hold = True
        poller = self.poller()
        done = poller.pollNow()
        self.network.flush()
        self.assertEqual(self.deleted(), [])
        self.assertTrue(poller.status().polling)

        while self.intake.waiting:
            self.intake.release()
            self.network.flush()
        self.successResultOf(done)

        for uid, _ in MESSAGES:
            self.assertLess(
                self.events.index(("taken", uid)), self.events.index(("DELE", uid))
            )
        self.assertEqual(self.events[-1], ("QUIT", 3))
        self.assertAllTaken(poller)

    def test_keepOnServer(self) -> None:
        """
        With keepOnServer, messages stay on the server, and the next poll
        retrieves none of them again.
        """
        poller = self.poller(keepOnServer=True)
        self.poll(poller)
        self.assertAllTaken(poller)

        del self.script.commands[:]
        self.poll(poller)

        self.assertEqual(len(self.mailbox.messages), 3)
        self.assertEqual(self.deleted(), [])
        self.assertNotIn("RETR", self.script.verbs())
        self.assertIn("UIDL", self.script.verbs())
        self.assertEqual(poller.status().messagesTaken, 3)

    def test_seenMessageRetrievedBeforeDeletion(self) -> None:
        """
        A message whose UIDL intake has seen is not deleted unseen: the
        server may have given the UIDL of a message taken and deleted
        before to a new one.  It is retrieved and handed to intake (which
        tells the two apart), and deleted only once intake has it.
        """
        self.intake.contents["uid-1"] = b"earlier"
        poller = self.poller()
        self.poll(poller)

        self.assertIn(b"RETR 1", self.script.commands)
        self.assertLess(
            self.events.index(("taken", "uid-1")), self.events.index(("DELE", "uid-1"))
        )
        self.assertEqual(self.intake.contents["uid-1"], crlf(MESSAGES[0][1]))
        self.assertEqual(sorted(self.deleted()), ["uid-1", "uid-2", "uid-3"])

    def test_tooLargeLeftAndReported(self) -> None:
        """
        A message larger than maxMessageSize is neither retrieved nor
        deleted, and the status counts it.
        """
        poller = self.poller(maxMessageSize=1000)
        self.poll(poller)

        self.assertNotIn(b"RETR 3", self.script.commands)
        self.assertEqual(sorted(self.intake.contents), ["uid-1", "uid-2"])
        self.assertEqual([uid for uid, _ in self.mailbox.messages], ["uid-3"])
        self.assertEqual(poller.status().messagesTooLarge, 1)
        self.assertEqual(poller.status().lastResult, "ok")

    def test_pipelining(self) -> None:
        """
        When the server announces PIPELINING, commands go out in batches
        without waiting for the answers before them.
        """
        self.script.capabilities.append(b"PIPELINING")
        poller = self.poller()
        self.poll(poller)

        self.assertAllTaken(poller)
        self.assertGreaterEqual(max(self.script.chunks), 3)
        self.assertEqual(self.script.verbs().count("RETR"), 3)

    def test_noPipeliningUnannounced(self) -> None:
        """
        Without PIPELINING, each command waits for the answer before it.
        """
        poller = self.poller()
        self.poll(poller)

        self.assertAllTaken(poller)
        self.assertEqual(max(self.script.chunks), 1)

    def test_userPassDespiteChallenge(self) -> None:
        """
        A greeting with an APOP challenge does not make the poller use
        APOP: it logs in with USER and PASS.
        """
        self.poll(self.poller())

        self.assertIn(b"<", self.script.magic)
        self.assertEqual(self.script.verbs()[:3], ["CAPA", "USER", "PASS"])
        self.assertNotIn("APOP", self.script.verbs())

    def test_apopWhenConfigured(self) -> None:
        """
        With apop, the poller logs in with APOP and the challenge's digest.
        """
        poller = self.poller(apop=True)
        self.poll(poller)

        self.assertEqual(
            self.script.commands[1],
            b"APOP agent 6c929ff7324fb8d34f2edab8a7decc33",
        )
        self.assertNotIn("USER", self.script.verbs())
        self.assertAllTaken(poller)

    def test_stls(self) -> None:
        """
        With tls "starttls", the poller starts TLS, asks for the
        capabilities again, and only then logs in.
        """
        self.script.capabilities.append(b"STLS")
        poller = self.poller(tls="starttls")
        self.poll(poller)

        self.assertEqual(
            self.script.verbs()[:5], ["CAPA", "STLS", "CAPA", "USER", "PASS"]
        )
        self.assertEqual(self.clientTLS.handshakes, 1)
        self.assertEqual(self.tlsAccounts, [makeAccount(tls="starttls")])
        self.assertAllTaken(poller)

    def test_stlsBeforeApop(self) -> None:
        """
        With tls "starttls" and apop, APOP comes after STLS.
        """
        self.script.capabilities.append(b"STLS")
        poller = self.poller(tls="starttls", apop=True)
        self.poll(poller)

        self.assertEqual(self.script.verbs()[:4], ["CAPA", "STLS", "CAPA", "APOP"])
        self.assertAllTaken(poller)

    def test_injectedAfterSTLSIgnored(self) -> None:
        """
        Lines that come in the clear with the answer to STLS are dropped:
        here a forged CAPA answer announcing PIPELINING is not believed.
        """
        self.script.capabilities.append(b"STLS")
        self.script.afterSTLS = b"+OK\r\nPIPELINING\r\n.\r\n+OK logged in\r\n"
        poller = self.poller(tls="starttls")
        self.poll(poller)

        self.assertAllTaken(poller)
        self.assertEqual(max(self.script.chunks), 1)
