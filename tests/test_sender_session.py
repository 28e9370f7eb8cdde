"""
Tests for opening an SMTP session: EHLO and HELO, STARTTLS and AUTH.
"""

from __future__ import annotations

from base64 import b64encode

from twisted.trial.unittest import SynchronousTestCase

from ace_mail.envelope import Outcome
from ace_mail.sender import Route, Server

from .fakesmtp import Script, SenderHarness


def b64(text: str) -> str:
    return b64encode(text.encode("utf-8")).decode("ascii")


class SessionTests(SenderHarness, SynchronousTestCase):
    """
    A sender and a fake server whose settings a test chooses.
    """

    def setUp(self) -> None:
        self.makeSender()

    def route(self, name: str = "one", **settings: object) -> tuple[Route, Script]:
        """
        Make a route of one server.

        @param settings: L{Server} attributes to change (such as C{tls} or
            C{username}); the rest go to the server's L{Script}.
        """
        serverFields = {"tls", "username", "password"}
        server, script = self.network.add(
            name, **{k: v for k, v in settings.items() if k not in serverFields}
        )
        changes = {k: v for k, v in settings.items() if k in serverFields}
        server = Server(server.name, server.host, server.port, **changes)  # type: ignore[arg-type]
        return Route("outgoing", (server,)), script

    def deliver(self, route: Route) -> Outcome:
        return self.successResultOf(self.send(route))

    def test_heloFallback(self) -> None:
        """
        A server that refuses EHLO with a 5xx gets HELO, and the message is
        sent without ESMTP extensions.
        """
        route, script = self.route(replies={"EHLO": ["502 5.5.2 no ESMTP"]})
        outcome = self.deliver(route)

        self.assertEqual(outcome.accepted, ("to@example.net",))
        self.assertEqual(
            script.commands[:3],
            ["EHLO ace.example", "HELO ace.example", "MAIL FROM:<from@example.com>"],
        )

    def test_startTLSRequiredButAbsent(self) -> None:
        """
        A server that must use TLS but does not offer STARTTLS gets no
        message; the next server does, and the first is set aside.
        """
        required, script = self.route(tls="required")
        other, otherScript = self.network.add("two")
        route = Route("outgoing", required.servers + (other,))
        outcome = self.deliver(route)

        self.assertEqual(outcome.server, "two two.example:25")
        self.assertEqual(script.verbs(), ["EHLO"])
        self.assertFalse(self.sender.serverStatus()[0].healthy)

    def test_startTLSRequiredButAbsentOutcome(self) -> None:
        """
        The reply that ends the attempt says that STARTTLS is missing.
        """
        route, script = self.route(tls="required")
        outcome = self.deliver(route)

        self.assertEqual(outcome.reply.code, 421)
        self.assertIn("does not offer STARTTLS", outcome.reply.text)

    def test_startTLSRefusedOpportunistic(self) -> None:
        """
        With opportunistic TLS, a server that refuses STARTTLS with a 5xx
        gets the message in plain text.
        """
        route, script = self.route(
            tls="opportunistic",
            extensions=["STARTTLS"],
            replies={"STARTTLS": ["554 5.7.0 not now"]},
        )
        outcome = self.deliver(route)

        self.assertEqual(outcome.accepted, ("to@example.net",))
        self.assertEqual(script.verbs()[:3], ["EHLO", "STARTTLS", "MAIL"])

    def test_startTLSTemporaryFailure(self) -> None:
        """
        A 4xx reply to STARTTLS fails the server.
        """
        route, script = self.route(
            tls="opportunistic",
            extensions=["STARTTLS"],
            replies={"STARTTLS": ["454 4.7.0 TLS not available"]},
        )
        outcome = self.deliver(route)
        self.assertEqual(outcome.refused["to@example.net"].code, 454)

    def test_noStartTLSWhenNone(self) -> None:
        """
        With C{tls="none"}, STARTTLS is not used even when offered.
        """
        route, script = self.route(tls="none", extensions=["STARTTLS"])
        self.deliver(route)
        self.assertNotIn("STARTTLS", script.verbs())

    def test_authPlain(self) -> None:
        """
        With credentials, the sender logs in with AUTH PLAIN before MAIL
        FROM.
        """
        route, script = self.route(
            tls="none",
            username="user",
            password="secret",
            extensions=["AUTH LOGIN PLAIN"],
            replies={"AUTH": ["235 2.7.0 ok"]},
        )
        outcome = self.deliver(route)

        self.assertEqual(outcome.accepted, ("to@example.net",))
        self.assertEqual(script.commands[1], "AUTH PLAIN " + b64("\0user\0secret"))
        self.assertEqual(script.verbs()[2], "MAIL")

    def test_authLogin(self) -> None:
        """
        A server that offers only AUTH LOGIN gets the user name and the
        password, each after its 334 prompt.
        """
        user, password = b64("user"), b64("secret")
        route, script = self.route(
            tls="none",
            username="user",
            password="secret",
            extensions=["AUTH LOGIN"],
            replies={
                "AUTH": ["334 VXNlcm5hbWU6"],
                user.upper(): ["334 UGFzc3dvcmQ6"],
                password.upper(): ["235 2.7.0 ok"],
            },
        )
        outcome = self.deliver(route)

        self.assertEqual(outcome.accepted, ("to@example.net",))
        self.assertEqual(script.commands[1:4], ["AUTH LOGIN", user, password])

    def test_authRefused(self) -> None:
        """
        Refused credentials fail the server for now, not the message for
        good.
        """
        route, script = self.route(
            tls="none",
            username="user",
            password="wrong",
            extensions=["AUTH PLAIN"],
            replies={"AUTH": ["535 5.7.8 bad credentials"]},
        )
        outcome = self.deliver(route)

        self.assertEqual(outcome.reply.code, 421)
        self.assertIn("535 5.7.8 bad credentials", outcome.reply.text)
        self.assertNotIn("MAIL", script.verbs())

    def test_noCredentialsInPlainText(self) -> None:
        """
        Credentials are not sent over a connection without TLS unless the
        server's TLS setting is C{"none"}.
        """
        route, script = self.route(
            tls="opportunistic",
            username="user",
            password="secret",
            extensions=["AUTH PLAIN"],
        )
        outcome = self.deliver(route)

        self.assertIn("without TLS", outcome.reply.text)
        self.assertEqual(script.verbs(), ["EHLO"])
