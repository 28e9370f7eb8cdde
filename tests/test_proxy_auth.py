"""
Tests for L{ace_mail.proxy._auth} (the credentials file and its checker) and
L{ace_mail.proxy._sasl} (the PLAIN and LOGIN exchanges).
"""

from __future__ import annotations

import base64
from typing import Callable, TypeVar

import bcrypt
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.proxy import CredentialsFileChecker, CredentialsFileError, readCredentials
from ace_mail.proxy._policy import Refused
from ace_mail.proxy._sasl import SaslExchange

_T = TypeVar("_T")
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Runner:
    """
    Runs the work at once, as a thread would later, and counts the calls.
    """

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, work: Callable[[], _T]) -> Deferred[_T]:
        self.calls += 1
        return maybeDeferred(work)


class ReadCredentialsTests(SynchronousTestCase):
    """
    L{readCredentials}.
    """

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_read(self) -> None:
        """
        Users and hashes are read; blank lines and comments are skipped, and
        the C{$2y$} hashes of htpasswd are taken too.
        """
        other = HASH.replace("$2b$", "$2y$", 1)
        path = self.write(f"# agents\n\nalice:{HASH}\n  bob@example.org:{other}  \n")
        self.assertEqual(
            readCredentials(path),
            {b"alice": HASH.encode(), b"bob@example.org": other.encode()},
        )

    def test_missingFile(self) -> None:
        """
        A file that cannot be read is named.
        """
        path = self.mktemp()
        with self.assertRaises(CredentialsFileError) as raised:
            readCredentials(path)
        self.assertIn(path, str(raised.exception))

    def test_badLines(self) -> None:
        """
        A line without a colon, with a bad user name, with a hash that is not
        bcrypt, or repeating a user is named by file and line.
        """
        cases = [
            ("alice\n", "line 1"),
            (f"# c\nal ice:{HASH}\n", "line 2"),
            ("alice:plaintext\n", "is not a bcrypt hash"),
            (f"alice:{HASH}\n\nalice:{HASH}\n", "line 3: alice is listed twice"),
            (f"alice:{HASH[:-1]}\n", "line 1"),
        ]
        for text, expected in cases:
            path = self.write(text)
            with self.assertRaises(CredentialsFileError, msg=text) as raised:
                readCredentials(path)
            self.assertIn(path, str(raised.exception))
            self.assertIn(expected, str(raised.exception))

    def test_notUtf8(self) -> None:
        """
        A file that is not UTF-8 is named, not a traceback.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\xff\xfe:x\n")
        with self.assertRaises(CredentialsFileError) as raised:
            readCredentials(path)
        self.assertIn(path, str(raised.exception))


class CheckerTests(SynchronousTestCase):
    """
    L{CredentialsFileChecker}.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        with open(self.path, "w") as f:
            f.write(f"alice:{HASH}\n")
        self.runner = Runner()
        self.checker = CredentialsFileChecker(self.path, self.runner)

    def test_rightPassword(self) -> None:
        """
        The right password gives the user name, checked in the runner.
        """
        result = self.checker.requestAvatarId(UsernamePassword(b"alice", b"s3cret"))
        self.assertEqual(self.successResultOf(result), b"alice")
        self.assertEqual(self.runner.calls, 1)

    def test_wrongPassword(self) -> None:
        """
        A wrong password fails with L{UnauthorizedLogin}.
        """
        result = self.checker.requestAvatarId(UsernamePassword(b"alice", b"guess"))
        self.failureResultOf(result, UnauthorizedLogin)

    def test_unknownUser(self) -> None:
        """
        An unknown user fails the same way, after a bcrypt check of its own
        so that the time does not tell.
        """
        result = self.checker.requestAvatarId(UsernamePassword(b"mallory", b"s3cret"))
        self.failureResultOf(result, UnauthorizedLogin)
        self.assertEqual(self.runner.calls, 1)

    def test_longPassword(self) -> None:
        """
        A password over bcrypt's 72 bytes fails rather than being cut.
        """
        password = b"s3cret" + b"x" * 80
        result = self.checker.requestAvatarId(UsernamePassword(b"alice", password))
        self.failureResultOf(result, UnauthorizedLogin)


class SaslTests(SynchronousTestCase):
    """
    L{SaslExchange}.
    """

    def test_plainInitial(self) -> None:
        """
        PLAIN with an initial response gives the credentials at once.
        """
        result = SaslExchange("PLAIN").start(b64(b"\0alice\0s3cret"))
        assert isinstance(result, UsernamePassword)
        self.assertEqual((result.username, result.password), (b"alice", b"s3cret"))

    def test_plainChallenge(self) -> None:
        """
        PLAIN without one sends an empty challenge; C{authzid} may repeat
        the user.
        """
        exchange = SaslExchange("PLAIN")
        self.assertEqual(exchange.start(None), b"")
        result = exchange.respond(b64(b"alice\0alice\0s3cret"))
        assert isinstance(result, UsernamePassword)
        self.assertEqual(result.username, b"alice")

    def test_plainOtherUser(self) -> None:
        """
        Acting for another user is refused with 535.
        """
        with self.assertRaises(Refused) as raised:
            SaslExchange("PLAIN").start(b64(b"bob\0alice\0s3cret"))
        self.assertEqual(raised.exception.refusal.code, 535)

    def test_plainMalformed(self) -> None:
        """
        A PLAIN response without two NULs is refused with 501.
        """
        with self.assertRaises(Refused) as raised:
            SaslExchange("PLAIN").start(b64(b"alice s3cret"))
        self.assertEqual(raised.exception.refusal.code, 501)

    def test_login(self) -> None:
        """
        LOGIN asks for the user name and then the password.
        """
        exchange = SaslExchange("LOGIN")
        self.assertEqual(base64.b64decode(exchange.start(None)), b"Username:")
        self.assertEqual(
            base64.b64decode(exchange.respond(b64(b"alice"))), b"Password:"
        )
        result = exchange.respond(b64(b"s3cret"))
        assert isinstance(result, UsernamePassword)
        self.assertEqual((result.username, result.password), (b"alice", b"s3cret"))

    def test_cancel(self) -> None:
        """
        C{*} cancels with 501 5.0.0.
        """
        with self.assertRaises(Refused) as raised:
            SaslExchange("LOGIN").respond("*")
        self.assertEqual(
            str(raised.exception.refusal), "501 5.0.0 authentication cancelled"
        )

    def test_badBase64(self) -> None:
        """
        A response that is not base64 is refused with 501 5.5.2.
        """
        for response in ["%%%", "YWxpY2U", "é"]:
            with self.assertRaises(Refused) as raised:
                SaslExchange("LOGIN").respond(response)
            self.assertEqual(raised.exception.refusal.status, "5.5.2", response)
