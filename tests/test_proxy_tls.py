"""
Tests for STARTTLS, implicit TLS and AUTH in L{ace_mail.proxy}.
"""

from __future__ import annotations

import base64
import os
from typing import Any, Callable, TypeVar

import bcrypt
from twisted.internet import ssl
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.proxy import CredentialsFileChecker, ProxyFactory

from .proxyfakes import CERTS, HOST, OPEN_ID, REPLY, Client, makeFactory

_T = TypeVar("_T")


def runNow(work: Callable[[], _T]) -> Deferred[_T]:
    return maybeDeferred(work)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class TLSTestCase(SynchronousTestCase):
    """
    Makes a checker that knows alice with password s3cret.
    """

    def checker(self, user: bytes = b"alice") -> CredentialsFileChecker:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(user + b":" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)) + b"\n")
        return CredentialsFileChecker(path, runNow)

    def factory(self, **options: Any) -> ProxyFactory:
        return makeFactory(tlsContext=object(), checker=self.checker(), **options)


class StartTLSTests(TLSTestCase):
    """
    STARTTLS at the protocol level.
    """

    def test_notOffered(self) -> None:
        """
        Without a TLS context there is no STARTTLS and no AUTH.
        """
        client = Client(makeFactory(checker=self.checker()))
        lines = client.send(b"EHLO c.example\r\n")
        self.assertNotIn("250-STARTTLS", lines)
        self.assertFalse([line for line in lines if "AUTH" in line])
        self.assertEqual(
            client.command("STARTTLS"), "502 5.5.1 STARTTLS is not available here"
        )

    def test_offeredBeforeTLS(self) -> None:
        """
        With a context STARTTLS is offered, and AUTH not yet: it is refused
        with 538 5.7.11 before TLS.
        """
        client = Client(self.factory(), host="198.51.100.7")
        lines = client.send(b"EHLO c.example\r\n")
        self.assertIn("250 STARTTLS", lines)
        self.assertFalse([line for line in lines if "AUTH" in line])
        self.assertEqual(
            client.command("AUTH PLAIN " + b64(b"\0alice\0s3cret")),
            "538 5.7.11 encryption required: send STARTTLS before AUTH",
        )

    def test_injectionDiscarded(self) -> None:
        """
        Commands pipelined behind STARTTLS in plain text are discarded and
        counted; the session then starts afresh, needing EHLO again.
        """
        factory = self.factory()
        client = Client(factory)
        client.command("EHLO c.example")
        lines = client.send(
            b"STARTTLS\r\nMAIL FROM:<evil@example.net>\r\nRCPT TO:<"
            + OPEN_ID.encode()
            + b"@"
            + HOST.encode()
            + b">\r\n"
        )
        self.assertEqual(lines, ["220 2.0.0 Ready to start TLS"])
        self.assertIs(client.transport.tlsStarted, factory.tlsContext)
        self.assertEqual(factory.refusals["starttls-injection"], 1)
        self.assertEqual(factory.store.lookups, [])
        self.assertEqual(
            client.command("MAIL FROM:<a@b.example>"),
            "503 5.5.1 send EHLO or HELO first",
        )

    def test_stateReset(self) -> None:
        """
        STARTTLS forgets an open transaction; EHLO then offers AUTH and no
        more STARTTLS, and a second STARTTLS is refused.
        """
        client = Client(self.factory())
        client.transaction(f"{OPEN_ID}@{HOST}")
        self.assertEqual(client.command("STARTTLS"), "220 2.0.0 Ready to start TLS")
        lines = client.send(b"EHLO c.example\r\n")
        self.assertIn("250 AUTH PLAIN LOGIN", lines)
        self.assertNotIn("250-STARTTLS", lines)
        self.assertEqual(client.command("DATA"), "503 5.5.1 send MAIL FROM first")
        self.assertEqual(client.command("STARTTLS"), "503 5.5.1 TLS is already active")

    def test_implicitTLS(self) -> None:
        """
        Behind a TLS endpoint the session is secure from the start: AUTH is
        offered, STARTTLS is not.
        """
        client = Client(self.factory(implicitTls=True))
        lines = client.send(b"EHLO c.example\r\n")
        self.assertIn("250 AUTH PLAIN LOGIN", lines)
        self.assertNotIn("250-STARTTLS", lines)
        self.assertEqual(client.command("STARTTLS"), "503 5.5.1 TLS is already active")


class AuthTests(TLSTestCase):
    """
    AUTH PLAIN and LOGIN after TLS, and what it allows.
    """

    def secureClient(self, **options: Any) -> Client:
        client = Client(self.factory(implicitTls=True, **options), host="198.51.100.7")
        client.command("EHLO c.example")
        return client

    def test_plainAllowsRelay(self) -> None:
        """
        After AUTH PLAIN an untrusted client may answer contacts and send
        pass-through mail.
        """
        client = self.secureClient()
        self.assertEqual(client.transaction(f"{OPEN_ID}@{HOST}")[0][:3], "550")
        client.command("RSET")
        self.assertEqual(
            client.command("AUTH PLAIN " + b64(b"\0alice\0s3cret")),
            "235 2.7.0 authentication succeeded",
        )
        self.assertEqual(
            client.transaction(f"{OPEN_ID}@{HOST}", "colleague@example.org"),
            [
                f"250 2.1.5 contact {OPEN_ID} OK",
                "250 2.1.5 recipient <colleague@example.org> OK",
            ],
        )
        self.assertEqual(client.message(), "250 2.0.0 message accepted as q0, q1")

    def test_userAddressHidden(self) -> None:
        """
        A user name that is an address is kept out of the customer's copy,
        even when the envelope sender is another address.
        """
        user = b"bob@agents.example.org"
        factory = makeFactory(implicitTls=True, checker=self.checker(user))
        client = Client(factory, host="198.51.100.7")
        client.command("EHLO c.example")
        client.command("AUTH PLAIN " + b64(b"\0" + user + b"\0s3cret"))
        client.transaction(f"{OPEN_ID}@{HOST}", sender="team@agents.example.org")
        body = b"From: Team <team@agents.example.org>\r\nSubject: ask bob@agents.example.org\r\n\r\nHi\r\n"
        self.assertEqual(client.message(body), "250 2.0.0 message accepted as q0")
        [(_, message)] = factory.queue.messages
        self.assertNotIn(user, message.split(b"\r\n\r\n")[0])

    def test_plainChallenge(self) -> None:
        """
        AUTH PLAIN without an initial response asks with an empty 334.
        """
        client = self.secureClient()
        self.assertEqual(client.command("AUTH PLAIN"), "334 ")
        self.assertEqual(
            client.command(b64(b"\0alice\0s3cret")),
            "235 2.7.0 authentication succeeded",
        )

    def test_login(self) -> None:
        """
        AUTH LOGIN asks for user and password in two 334 steps.
        """
        client = self.secureClient()
        self.assertEqual(client.command("AUTH LOGIN"), "334 VXNlcm5hbWU6")
        self.assertEqual(client.command(b64(b"alice")), "334 UGFzc3dvcmQ6")
        self.assertEqual(
            client.command(b64(b"s3cret")), "235 2.7.0 authentication succeeded"
        )
        self.assertEqual(
            client.command("AUTH LOGIN"),
            "503 5.5.1 AUTH is allowed once, after EHLO and outside a transaction",
        )

    def test_failures(self) -> None:
        """
        Wrong credentials get 535 5.7.8 and allow nothing; the third failure
        closes the connection with 421.
        """
        client = self.secureClient()
        wrong = "AUTH PLAIN " + b64(b"\0alice\0guess")
        self.assertEqual(
            client.command(wrong), "535 5.7.8 authentication credentials invalid"
        )
        self.assertEqual(client.transaction(f"{OPEN_ID}@{HOST}")[0][:3], "550")
        client.command("RSET")
        client.command(wrong)
        self.assertEqual(
            client.send(wrong.encode() + b"\r\n"),
            [
                "535 5.7.8 authentication credentials invalid",
                "421 4.7.0 too many failed authentications; closing the connection",
            ],
        )
        self.assertTrue(client.transport.disconnecting)

    def test_cancelAndGarbage(self) -> None:
        """
        C{*} cancels, undecodable responses and unknown mechanisms are
        refused, and the session goes on.
        """
        client = self.secureClient()
        client.command("AUTH LOGIN")
        self.assertEqual(client.command("*"), "501 5.0.0 authentication cancelled")
        client.command("AUTH PLAIN")
        self.assertEqual(
            client.command("not base64!"),
            "501 5.5.2 cannot decode the response as base64",
        )
        self.assertTrue(client.command("AUTH CRAM-MD5").startswith("504 5.5.4"))
        self.assertEqual(client.command("NOOP"), "250 2.0.0 OK")

    def test_noChecker(self) -> None:
        """
        Without a checker AUTH is not offered and refused with 502.
        """
        client = Client(makeFactory(implicitTls=True))
        self.assertFalse(
            [line for line in client.send(b"EHLO c.example\r\n") if "AUTH" in line]
        )
        self.assertEqual(
            client.command("AUTH PLAIN"), "502 5.5.1 AUTH is not available here"
        )


class FakeTLSContext:
    """
    A context for iosim's pretend TLS, which verifies any peer.
    """

    def iosimVerify(self, other: object) -> bool:
        return True


class ScriptedClient(Protocol):
    """
    Collects reply lines and starts TLS when told it may.
    """

    def __init__(self, context: object | None = None) -> None:
        self.lines: list[str] = []
        self._context = context
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\r\n")
        for line in lines:
            self.lines.append(line.decode())
            if line.startswith(b"220 2.0.0") and self._context is not None:
                self.transport.startTLS(self._context)

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


class ConnectedTests(TLSTestCase):
    """
    Whole conversations over iosim.
    """

    def test_startTLSOverIosim(self) -> None:
        """
        A client that pipelines MAIL behind STARTTLS gets no answer to it;
        after the handshake the transport is secure, AUTH is offered and
        works, and a reply is queued.
        """
        factory = makeFactory(tlsContext=FakeTLSContext(), checker=self.checker())
        server = factory.buildProtocol(None)
        client = ScriptedClient(FakeTLSContext())
        peer = IPv4Address("TCP", "198.51.100.7", 5000)
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True, peerAddress=peer),
            client,
            iosim.FakeTransport(client, isServer=False),
        )
        self.assertEqual(
            client.take(), ["220 mx.example.com ESMTP ace-mail proxy ready"]
        )
        client.transport.write(
            b"EHLO c.example\r\nSTARTTLS\r\nMAIL FROM:<evil@example.net>\r\n"
        )
        pump.flush()
        self.assertEqual(client.take()[-1], "220 2.0.0 Ready to start TLS")
        self.assertTrue(ISSLTransport.providedBy(server.transport))
        client.transport.write(
            b"EHLO c.example\r\nAUTH PLAIN "
            + b64(b"\0alice\0s3cret").encode()
            + b"\r\n"
        )
        client.transport.write(
            b"MAIL FROM:<agent@agents.example.org>\r\nRCPT TO:<"
            + OPEN_ID.encode()
            + b"@"
            + HOST.encode()
            + b">\r\nDATA\r\n"
        )
        pump.flush()
        lines = client.take()
        self.assertIn("250 AUTH PLAIN LOGIN", lines)
        self.assertEqual(
            lines[-4:],
            [
                "235 2.7.0 authentication succeeded",
                "250 2.1.0 sender <agent@agents.example.org> OK",
                f"250 2.1.5 contact {OPEN_ID} OK",
                "354 End data with <CR><LF>.<CR><LF>",
            ],
        )
        client.transport.write(REPLY + b".\r\nQUIT\r\n")
        pump.flush()
        self.assertEqual(client.take()[0], "250 2.0.0 message accepted as q0")
        self.assertEqual(len(factory.queue.messages), 1)

    def test_implicitTLSWithCertificate(self) -> None:
        """
        With the test certificate behind a real in-memory TLS layer, a
        client that trusts the test CA and checks the name localhost
        completes the handshake, authenticates and sends a reply.
        """
        with open(os.path.join(CERTS, "server.pem")) as f:
            pem = f.read()
        with open(os.path.join(CERTS, "server.key")) as f:
            pem += f.read()
        with open(os.path.join(CERTS, "ca.pem")) as f:
            authority = ssl.Certificate.loadPEM(f.read())
        serverOptions = ssl.PrivateCertificate.loadPEM(pem).options()
        clientOptions = ssl.optionsForClientTLS("localhost", trustRoot=authority)

        proxy = makeFactory(checker=self.checker(), implicitTls=True)
        client = ScriptedClient()
        clientFactory = Factory.forProtocol(lambda: client)
        serverTLS = TLSMemoryBIOFactory(serverOptions, False, proxy, clock=proxy.clock)
        clientTLS = TLSMemoryBIOFactory(
            clientOptions, True, clientFactory, clock=proxy.clock
        )
        clientProtocol, _, pump = iosim.connectedServerAndClient(
            lambda: serverTLS.buildProtocol(None),
            lambda: clientTLS.buildProtocol(None),
            clock=proxy.clock,
        )
        self.assertEqual(
            client.take(), ["220 mx.example.com ESMTP ace-mail proxy ready"]
        )
        client.transport.write(
            b"EHLO c.example\r\nAUTH PLAIN "
            + b64(b"\0alice\0s3cret").encode()
            + b"\r\n"
            b"MAIL FROM:<agent@agents.example.org>\r\nRCPT TO:<"
            + OPEN_ID.encode()
            + b"@"
            + HOST.encode()
            + b">\r\nDATA\r\n"
        )
        pump.flush()
        lines = client.take()
        self.assertIn("250 AUTH PLAIN LOGIN", lines)
        self.assertEqual(lines[-1], "354 End data with <CR><LF>.<CR><LF>")
        client.transport.write(REPLY + b".\r\n")
        pump.flush()
        self.assertEqual(client.take(), ["250 2.0.0 message accepted as q0"])
        self.assertIsNotNone(clientProtocol.getPeerCertificate())
