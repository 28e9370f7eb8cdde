"""
Tests of L{ace_mail.sender.Sender} against real SMTP servers: aiosmtpd,
started in this process on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
import threading
from typing import Any

from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.ssl import Certificate
from twisted.trial.unittest import TestCase

from ace_mail.envelope import BytesSource, Envelope, Outcome
from ace_mail.sender import Route, Sender, Server


class Collector:
    """
    An aiosmtpd handler that keeps what it receives.

    @ivar messages: Each message as (sender, recipients, content, whether
        it came over TLS).
    @ivar hellos: How many EHLOs were received.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, list[str], bytes, bool]] = []
        self.hellos = 0

    async def handle_EHLO(
        self,
        server: Any,
        session: Any,
        envelope: Any,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        with self.lock:
            self.hellos += 1
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(
                (
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.original_content,
                    session.ssl is not None,
                )
            )
        return "250 2.0.0 kept"


def freePort() -> int:
    """
    @return: A TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def selfSigned(directory: str) -> tuple[str, str, bytes]:
    """
    Make a self-signed certificate for 127.0.0.1.

    @return: The paths of the certificate and key files, and the
        certificate as PEM.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    os.makedirs(directory)
    certPath, keyPath = os.path.join(directory, "cert.pem"), os.path.join(
        directory, "key.pem"
    )
    with open(certPath, "wb") as f:
        f.write(pem)
    with open(keyPath, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return certPath, keyPath, pem


class AiosmtpdTests(TestCase):
    """
    Sending to aiosmtpd servers over loopback.
    """

    timeout = 60

    def startServer(self, **kwargs: Any) -> tuple[int, Collector]:
        """
        Start an aiosmtpd server on 127.0.0.1, stopped after the test.

        @return: Its port and its handler.
        """
        collector = Collector()
        port = freePort()
        controller = Controller(collector, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        self.addCleanup(controller.stop)
        return port, collector

    def makeSender(self, **kwargs: Any) -> Sender:
        sender = Sender(reactor, heloName="ace.example", **kwargs)
        self.addCleanup(sender.stop)
        return sender

    async def sendAll(self, sender: Sender, route: Route, count: int) -> list[Outcome]:
        sendings = [
            sender.send(
                route,
                Envelope("from@example.com", (f"to{n}@example.net",)),
                BytesSource(b"Subject: %d\r\n\r\n.dot line\r\n%d\r\n" % (n, n)),
                f"Q{n}",
            )
            for n in range(count)
        ]
        return await gatherResults(sendings)

    def test_twoHundredMessages(self) -> Deferred[None]:
        """
        200 messages sent at once over a route of two servers all arrive,
        intact, over reused connections.
        """
        portOne, one = self.startServer()
        portTwo, two = self.startServer()
        route = Route(
            "outgoing",
            (
                Server("outgoing/1", "127.0.0.1", portOne),
                Server("outgoing/2", "127.0.0.1", portTwo),
            ),
        )
        sender = self.makeSender()

        async def check() -> None:
            outcomes = await self.sendAll(sender, route, 200)
            self.assertEqual(
                [o.accepted for o in outcomes],
                [(f"to{n}@example.net",) for n in range(200)],
            )
            received = sorted(
                (recipients, content)
                for _, recipients, content, _ in one.messages + two.messages
            )
            expected = sorted(
                (
                    [f"to{n}@example.net"],
                    b"Subject: %d\r\n\r\n.dot line\r\n%d\r\n" % (n, n),
                )
                for n in range(200)
            )
            self.assertEqual(received, expected)
            self.assertTrue(one.messages and two.messages)
            self.assertLessEqual(one.hellos + two.hellos, 20)

        return Deferred.fromCoroutine(check())

    def test_startTLS(self) -> Deferred[None]:
        """
        A server that offers STARTTLS gets the messages over TLS: unverified
        with C{"opportunistic"}, verified against the trust root with
        C{"required"}.
        """
        certPath, keyPath, pem = selfSigned(self.mktemp())
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certPath, keyPath)
        port, collector = self.startServer(tls_context=context)
        sender = self.makeSender(trustRoot=Certificate.loadPEM(pem))

        async def check() -> None:
            for tls in ["opportunistic", "required"]:
                route = Route(tls, (Server(tls, "127.0.0.1", port, tls=tls),))
                outcomes = await self.sendAll(sender, route, 3)
                self.assertEqual(
                    [len(o.accepted) for o in outcomes], [1, 1, 1], outcomes
                )
            self.assertEqual([tls for _, _, _, tls in collector.messages], [True] * 6)

        return Deferred.fromCoroutine(check())

    def test_startTLSUntrusted(self) -> Deferred[None]:
        """
        With C{"required"}, a certificate that the trust root does not vouch
        for stops the delivery, for now.
        """
        # aiosmtpd logs the failed handshake with a traceback; it is expected.
        aiosmtpdLog = logging.getLogger("mail.log")
        self.addCleanup(aiosmtpdLog.setLevel, aiosmtpdLog.level)
        aiosmtpdLog.setLevel(logging.CRITICAL)
        certPath, keyPath, pem = selfSigned(self.mktemp())
        otherPem = selfSigned(self.mktemp())[2]
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certPath, keyPath)
        port, collector = self.startServer(tls_context=context)
        sender = self.makeSender(trustRoot=Certificate.loadPEM(otherPem))
        route = Route(
            "required", (Server("required", "127.0.0.1", port, tls="required"),)
        )

        async def check() -> None:
            [outcome] = await self.sendAll(sender, route, 1)
            self.assertEqual(outcome.accepted, ())
            self.assertEqual(outcome.reply.code, 421)
            self.assertTrue(outcome.refused["to0@example.net"].isTemporary)
            self.assertEqual(collector.messages, [])

        return Deferred.fromCoroutine(check())

    def test_implicitTLS(self) -> Deferred[None]:
        """
        A server with C{"implicit"} TLS is reached over TLS from the first
        byte, its certificate verified.
        """
        certPath, keyPath, pem = selfSigned(self.mktemp())
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certPath, keyPath)
        port, collector = self.startServer(ssl_context=context)
        sender = self.makeSender(trustRoot=Certificate.loadPEM(pem))
        route = Route("smtps", (Server("smtps", "127.0.0.1", port, tls="implicit"),))

        async def check() -> None:
            outcomes = await self.sendAll(sender, route, 2)
            self.assertEqual([len(o.accepted) for o in outcomes], [1, 1], outcomes)
            self.assertEqual(len(collector.messages), 2)

        return Deferred.fromCoroutine(check())
