"""
End-to-end tests of L{ace_mail.proxy} on 127.0.0.1: Python's smtplib, in a
thread, against the proxy on the real reactor, with real STARTTLS.
"""

from __future__ import annotations

import os
import smtplib
import ssl as stdlibssl
from typing import Any

import bcrypt
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ace_mail.proxy import CredentialsFileChecker, ProxyFactory, ProxySettings
from tests.proxyfakes import (
    CERTS,
    ENTRANCE,
    HOST,
    OPEN_ID,
    REPLY,
    SALES,
    FakeQueue,
    FakeStore,
    contact,
)


class LoopbackTests(TestCase):
    """
    A real client over a real socket.
    """

    timeout = 30

    def setUp(self) -> None:
        with open(os.path.join(CERTS, "server.pem")) as f:
            pem = f.read()
        with open(os.path.join(CERTS, "server.key")) as f:
            pem += f.read()
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"alice:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)) + b"\n")
        self.queue = FakeQueue()
        self.factory = ProxyFactory(
            reactor,
            ProxySettings(rerouteName=HOST, heloName="localhost", trustedNetworks=()),
            FakeStore(contact(OPEN_ID)),
            {"default": ENTRANCE, "sales": SALES},
            self.queue,
            tlsContext=ssl.PrivateCertificate.loadPEM(pem).options(),
            checker=CredentialsFileChecker(path, lambda work: maybeDeferred(work)),
        )
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def session(self, **steps: Any) -> Deferred[Any]:
        port = self.port.getHost().port
        context = stdlibssl.create_default_context(cafile=os.path.join(CERTS, "ca.pem"))

        def talk() -> Any:
            with smtplib.SMTP(
                "127.0.0.1", port, local_hostname="client.example", timeout=10
            ) as client:
                results = {"before": client.ehlo()[1]}
                if steps.get("tls"):
                    results["starttls"] = client.starttls(context=context)
                    results["after"] = client.ehlo()[1]
                if steps.get("login"):
                    results["auth"] = client.login("alice", steps["login"])
                results["refused"] = client.sendmail(
                    "agent@agents.example.org",
                    [f"{OPEN_ID}@{HOST}", "colleague@example.org"],
                    REPLY,
                )
                return results

        return deferToThread(talk)

    async def test_authenticatedOverStartTLS(self) -> None:
        """
        An untrusted client that starts TLS, checking the certificate, and
        logs in may send a reply and pass-through mail.
        """
        results = await self.session(tls=True, login="s3cret")
        self.assertIn(b"STARTTLS", results["before"])
        self.assertNotIn(b"AUTH", results["before"])
        self.assertIn(b"AUTH PLAIN LOGIN", results["after"])
        self.assertEqual(results["auth"][0], 235)
        self.assertEqual(results["refused"], {})
        self.assertEqual(
            [envelope.recipients for envelope, _ in self.queue.messages],
            [("customer-aaaa@example.net",), ("colleague@example.org",)],
        )

    async def test_untrustedRefused(self) -> None:
        """
        The same client without logging in is refused every recipient.
        """
        try:
            await self.session(tls=True)
        except smtplib.SMTPRecipientsRefused as e:
            codes = {code for code, _ in e.recipients.values()}
            self.assertEqual(codes, {550})
        else:
            self.fail("the recipients were not refused")
        self.assertEqual(self.queue.messages, [])
