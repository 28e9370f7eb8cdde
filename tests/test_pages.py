"""
Tests for L{ace_mail.pages}: C{/metrics} and C{/healthz} without a token,
and who may see C{/status}.
"""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import quote

from prometheus_client.parser import text_string_to_metric_families
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.status import STYLE
from tests.pagesfakes import MINUTE, TOKEN, PagesMixin
from tests.test_status import Page


class MetricsPageTests(PagesMixin, SynchronousTestCase):
    """
    C{GET /metrics}.
    """

    def test_servedWithoutToken(self) -> None:
        """
        Prometheus's text format is served without a token, with the
        contact counts fresh from the store, counted against the
        retention.
        """
        self.metrics.attempted(
            "outgoing", "outgoing/1 smtp1.example:25", {"delivered": 1}, 2.0
        )
        status, headers, body = self.get("/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(
            headers[b"content-type"], [b"text/plain; version=0.0.4; charset=utf-8"]
        )
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        contacts = {
            s.labels["state"]: s.value for s in families["acemail_contacts"].samples
        }
        self.assertEqual(contacts, {"open": 3, "ended": 2, "expired": 1})
        self.assertEqual(self.store.countedSince, [MINUTE - 3600.0])
        self.assertIn("acemail_deliveries", families)

    def test_storeDown(self) -> None:
        """
        When the store does not answer, the rest is still served, without
        contact counts, and the trouble is logged.
        """
        self.store.answer = "broken"
        with capturedLogs() as events:
            status, _, body = self.get("/metrics")
        self.assertEqual(status, 200)
        self.assertNotIn(b"acemail_contacts{", body)
        self.assertIn(b"acemail_deliveries", body)
        self.assertIn("database is locked", events[-1]["reason"])

    def test_apiStillNeedsToken(self) -> None:
        """
        Every path other than the operators' pages is the API's, which
        still wants its bearer token.
        """
        status, _, body = self.get("/v1/queue")
        self.assertEqual(status, 401)
        self.assertEqual(json.loads(body)["error"]["code"], "unauthorized")
        status, _, body = self.get("/v1/queue", {"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual((status, json.loads(body)), (200, {"queue": []}))


class HealthTests(PagesMixin, SynchronousTestCase):
    """
    C{GET /healthz}.
    """

    def test_healthy(self) -> None:
        """
        With every listener listening and the store answering, the answer
        is 200 and names every check, without a token.
        """
        status, headers, body = self.get("/healthz")
        self.assertEqual(
            (status, headers[b"content-type"]), (200, [b"application/json"])
        )
        self.assertEqual(
            json.loads(body),
            {
                "status": "up",
                "checks": {
                    "API listener": "up",
                    "SMTP proxy listener": "up",
                    "contact store": "up",
                },
            },
        )

    def test_listenerDown(self) -> None:
        """
        A listener that listens on no port makes the answer 503, saying
        which.
        """
        self.proxy.numPorts = 0
        status, _, body = self.get("/healthz")
        self.assertEqual(status, 503)
        answer = json.loads(body)
        self.assertEqual(answer["status"], "down")
        self.assertEqual(answer["checks"]["SMTP proxy listener"], "not listening")
        self.assertEqual(answer["checks"]["API listener"], "up")

    def test_storeFails(self) -> None:
        """
        A store whose trivial query fails makes the answer 503, with its
        error.
        """
        self.store.answer = "broken"
        status, _, body = self.get("/healthz")
        self.assertEqual(status, 503)
        self.assertEqual(
            json.loads(body)["checks"]["contact store"], "no answer: database is locked"
        )

    def test_storeHangs(self) -> None:
        """
        A store that does not answer within five seconds makes the answer
        503 then, and not before.
        """
        self.store.answer = "hung"
        transport = self.request("GET", "/healthz")
        self.clock.advance(4.9)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0.1)
        status, _, body = self.response(transport)
        self.assertEqual(status, 503)
        self.assertIn("no answer", json.loads(body)["checks"]["contact store"])


class SignInTests(PagesMixin, SynchronousTestCase):
    """
    Who may see C{/status}: the bearer token, or the cookie its form sets.
    """

    def signIn(self, token: str) -> tuple[int, dict[bytes, list[bytes]], bytes]:
        body = f"token={quote(token)}".encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return self.response(self.request("POST", "/status", headers, body))

    def test_formWithoutToken(self) -> None:
        """
        Without a token the answer is 401 with the sign-in form, under a
        content security policy that allows no script.
        """
        status, headers, body = self.get("/status")
        self.assertEqual(status, 401)
        self.assertEqual(headers[b"www-authenticate"], [b'Bearer realm="ace-mail"'])
        [policy] = headers[b"content-security-policy"]
        self.assertIn(b"default-src 'none'", policy)
        self.assertNotIn(b"script-src", policy)
        self.assertEqual(Page(body).named("input")[0]["name"], "token")

    def test_bearerToken(self) -> None:
        """
        The API's bearer token opens the page.
        """
        status, headers, body = self.get(
            "/status", {"Authorization": f"Bearer {TOKEN}"}
        )
        self.assertEqual(status, 200)
        self.assertEqual(headers[b"content-type"], [b"text/html; charset=utf-8"])
        self.assertIn(b"ace-mail on mx.example", body)
        wrong = self.get("/status", {"Authorization": f"Bearer {TOKEN}x"})
        self.assertEqual(wrong[0], 401)

    def test_wrongTokenInForm(self) -> None:
        """
        A wrong token in the form gets the form again with a sentence, and
        no cookie.
        """
        status, headers, body = self.signIn("guess")
        self.assertEqual(status, 401)
        self.assertNotIn(b"set-cookie", headers)
        self.assertIn("That is not the API token.", Page(body).text)

    def test_cookieFromForm(self) -> None:
        """
        The right token sets an HttpOnly, same-site cookie for C{/status}
        alone, that is not the token, and sends the browser back to the
        page, which the cookie then opens.
        """
        status, headers, _ = self.signIn(TOKEN)
        self.assertEqual((status, headers[b"location"]), (303, [b"/status"]))
        [cookie] = headers[b"set-cookie"]
        attributes = [part.strip().lower() for part in cookie.split(b";")]
        self.assertEqual(
            sorted(attributes[1:]), [b"httponly", b"path=/status", b"samesite=strict"]
        )
        self.assertNotIn(TOKEN.encode(), cookie)
        status, _, body = self.get(
            "/status", {"Cookie": cookie.split(b";")[0].decode()}
        )
        self.assertEqual(status, 200)
        self.assertIn(b"ace-mail on mx.example", body)

    def test_cookieOpensNothingElse(self) -> None:
        """
        The status page's cookie is no key to the API, and a made-up
        cookie opens nothing.
        """
        _, headers, _ = self.signIn(TOKEN)
        cookie = headers[b"set-cookie"][0].split(b";")[0].decode()
        self.assertEqual(self.get("/v1/queue", {"Cookie": cookie})[0], 401)
        self.assertEqual(self.get("/status", {"Cookie": "ace-mail-status=00"})[0], 401)

    def test_styleAllowedByPolicy(self) -> None:
        """
        The policy allows the page's one inline style sheet by its digest,
        so the page is styled though inline styles are otherwise refused.
        """
        _, headers, body = self.get("/status", {"Authorization": f"Bearer {TOKEN}"})
        digest = base64.b64encode(hashlib.sha256(STYLE.encode()).digest())
        self.assertIn(
            b"style-src 'sha256-" + digest + b"'",
            headers[b"content-security-policy"][0],
        )
        self.assertIn(b"<style>" + STYLE.encode() + b"</style>", body)
