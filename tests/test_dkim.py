"""
Tests for L{ace_mail.dkim}: signatures that a verifier accepts, and only for
domains with a key.
"""

from __future__ import annotations

import os

import dkim
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.config import DkimKey
from ace_mail.dkim import Signer, fromDomain

_DATA = os.path.join(os.path.dirname(__file__), "data")
MESSAGE = (
    b"From: Support <support@Example.COM>\r\n"
    b"To: customer@example.net\r\n"
    b"Subject: Your case\r\n"
    b"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Hello.\r\n"
)


def _signer() -> Signer:
    with open(os.path.join(_DATA, "dkim-test-key.pem"), "rb") as f:
        return Signer([DkimKey("example.com", "ace", f.read())])


def _publicKeyRecord(name: bytes, timeout: int = 5) -> bytes:
    with open(os.path.join(_DATA, "dkim-test-key.pub"), "rb") as f:
        return b"v=DKIM1; k=rsa; p=" + f.read().strip()


class SignerTests(SynchronousTestCase):
    """
    L{Signer.sign}.
    """

    def test_signatureVerifies(self) -> None:
        """
        Mail from a domain with a key gets a signature that verifies against
        the published key, with the domain and selector configured.
        """
        signed = _signer().sign(MESSAGE)
        self.assertTrue(signed.startswith(b"DKIM-Signature:"))
        self.assertTrue(signed.endswith(MESSAGE))
        self.assertIn(b"d=example.com", signed)
        self.assertIn(b"s=ace", signed)
        self.assertTrue(dkim.verify(signed, dnsfunc=_publicKeyRecord))

    def test_tamperingDetected(self) -> None:
        """
        The signature covers the body: a changed body no longer verifies,
        so the test above is not vacuous.
        """
        signed = _signer().sign(MESSAGE).replace(b"Hello.", b"Hellp.")
        self.assertFalse(dkim.verify(signed, dnsfunc=_publicKeyRecord))

    def test_otherDomainUnsigned(self) -> None:
        """
        Mail from a domain without a key passes unchanged.
        """
        other = MESSAGE.replace(b"Example.COM", b"example.org")
        self.assertIs(_signer().sign(other), other)

    def test_noFromUnsigned(self) -> None:
        """
        A message without a usable From passes unchanged.
        """
        message = b"Subject: x\r\n\r\nbody\r\n"
        self.assertIs(_signer().sign(message), message)


class FromDomainTests(SynchronousTestCase):
    """
    L{fromDomain}.
    """

    def test_domainLowerCased(self) -> None:
        """
        The From domain is found and lower-cased.
        """
        self.assertEqual(fromDomain(MESSAGE), "example.com")

    def test_garbage(self) -> None:
        """
        A header block that does not parse gives no domain, not an error.
        """
        self.assertIsNone(fromDomain(b"From: <<<@@@>>>\r\n\r\n"))
        self.assertIsNone(fromDomain(b""))
