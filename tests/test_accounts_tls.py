"""
Tests for TLS to a POP3 account's server: L{ace_mail.accounts._tls} and
whole polls over real TLS in memory.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.accounts import AccountPoller, POP3Error
from ace_mail.accounts._tls import clientTLSOptions
from tests.pop3fakes import (
    FakeIntake,
    FakePOP3Server,
    MemoryMailbox,
    MemoryNetwork,
    ServerScript,
    makeAccount,
)

CERTS = os.path.join(os.path.dirname(__file__), "certs")
CA = os.path.join(CERTS, "ca.pem")


def serverTLS() -> Any:
    with open(os.path.join(CERTS, "server.pem"), "rb") as f:
        certificate = f.read()
    with open(os.path.join(CERTS, "server.key"), "rb") as f:
        key = f.read()
    return PrivateCertificate.loadPEM(certificate + key).options()


class OptionsTests(SynchronousTestCase):
    """
    L{clientTLSOptions}.
    """

    def test_badCaFile(self) -> None:
        """
        A CA file without certificates is refused with its name.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(
                b"-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n"
            )
        with self.assertRaises(POP3Error) as raised:
            clientTLSOptions(makeAccount(caFile=path))
        self.assertIn(f"caFile {path} holds no readable PEM", str(raised.exception))

    def test_missingCaFile(self) -> None:
        """
        A CA file that is not there is refused with its name.
        """
        path = self.mktemp()
        with self.assertRaises(POP3Error) as raised:
            clientTLSOptions(makeAccount(caFile=path))
        self.assertIn(f"cannot read caFile {path}", str(raised.exception))


class ImplicitTLSTests(SynchronousTestCase):
    """
    Polls over real TLS, in memory, to a server whose certificate, for
    C{localhost}, is signed by the tests' CA.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[Any] = []
        self.mailbox = MemoryMailbox(
            [("uid-1", b"Subject: hi\n\nhello\n")], self.events
        )
        # Twisted's RETR streams from a pull producer, which TLS would drive
        # from the global reactor's cooperator: send the message whole.
        self.script = ServerScript(
            raw={b"RETR": b"+OK\r\nSubject: hi\r\n\r\nhello\r\n.\r\n"}
        )
        serverOptions = serverTLS()

        def tlsServer(server: FakePOP3Server) -> Any:
            factory = Factory()
            factory.buildProtocol = lambda addr: server  # type: ignore[method-assign]
            return TLSMemoryBIOFactory(
                serverOptions, False, factory, self.clock
            ).buildProtocol(None)

        self.network = MemoryNetwork(self.clock, self.mailbox, self.script, tlsServer)
        self.intake = FakeIntake(self.mktemp(), self.events)

    def poll(self, **changes: Any) -> AccountPoller:
        account = makeAccount(host="localhost", port=995, tls="implicit", **changes)
        poller = AccountPoller(
            self.clock,
            account,
            self.intake,
            endpointFactory=lambda a: wrapClientTLS(
                clientTLSOptions(a), self.network, self.clock
            ),
        )
        done = poller.pollNow()
        self.network.flush()
        self.successResultOf(done)
        return poller

    def test_trustedByCaFile(self) -> None:
        """
        A server certificate signed by the authority of caFile is trusted.
        """
        poller = self.poll(caFile=CA)
        self.assertEqual(poller.status().lastResult, "ok")
        self.assertEqual(
            self.intake.contents, {"uid-1": b"Subject: hi\r\n\r\nhello\r\n"}
        )

    def test_verifiedByDefault(self) -> None:
        """
        By default the platform's authorities verify the certificate: the
        tests' CA is not among them, so nothing is sent.
        """
        poller = self.poll()
        self.assertIn("certificate verify failed", poller.status().lastResult or "")
        self.assertEqual(self.script.commands, [])
        self.assertEqual(self.intake.contents, {})

    def test_wrongHost(self) -> None:
        """
        A certificate for another host name is refused even when its
        authority is trusted.
        """
        account = dict(caFile=CA)
        poller = AccountPoller(
            self.clock,
            makeAccount(host="127.0.0.2", port=995, tls="implicit", **account),
            self.intake,
            endpointFactory=lambda a: wrapClientTLS(
                clientTLSOptions(a), self.network, self.clock
            ),
        )
        done = poller.pollNow()
        self.network.flush()
        self.successResultOf(done)
        self.assertNotEqual(poller.status().lastResult, "ok")
        self.assertEqual(self.script.commands, [])

    def test_unverified(self) -> None:
        """
        With verifyCertificate off, any certificate is taken.
        """
        poller = self.poll(verifyCertificate=False)
        self.assertEqual(poller.status().lastResult, "ok")
        self.assertEqual(
            self.intake.contents, {"uid-1": b"Subject: hi\r\n\r\nhello\r\n"}
        )
