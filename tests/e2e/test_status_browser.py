"""
End-to-end tests of the operators' pages: a real C{twistd -n ace-mail}
delivers a few messages to two real sinks, then C{/metrics}, C{/healthz}
and C{/status} are read over HTTP, the status page in Debian's headless
Chromium driven by chromedriver through its WebDriver API.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
import uuid
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.e2e._harness import LOOPBACK, AceMail, Sink, freePort, received, waitFor

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1400",
]
_ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class WebDriver:
    """
    A chromedriver process and one headless Chromium session, spoken to
    over the W3C WebDriver HTTP API.  Every call is bounded in time.
    """

    def __init__(self, chromium: str, chromedriver: str, profile: str) -> None:
        self.port = freePort()
        self.process = subprocess.Popen(
            [chromedriver, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        waitFor("chromedriver to listen", self._ready, 30)
        options = {"binary": chromium, "args": CHROMIUM_FLAGS + [profile]}
        capabilities = {"browserName": "chrome", "goog:chromeOptions": options}
        answer = self.call(
            "POST", "/session", {"capabilities": {"alwaysMatch": capabilities}}
        )
        self.session = f"/session/{answer['sessionId']}"

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError("chromedriver exited at start")
        try:
            return bool(self.call("GET", "/status")["ready"])
        except OSError:
            return False

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """
        @return: The C{value} of a WebDriver command's answer.
        @raise AssertionError: With WebDriver's error, if the command failed.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"WebDriver {method} {path}: {e.read()!r}") from None

    def go(self, url: str) -> None:
        """
        Load C{url} and wait for it.
        """
        self.call("POST", f"{self.session}/url", {"url": url})

    def find(self, selector: str) -> list[str]:
        """
        @return: The ids of the elements that match a CSS selector.
        """
        query = {"using": "css selector", "value": selector}
        found = self.call("POST", f"{self.session}/elements", query)
        return [element[_ELEMENT] for element in found]

    def text(self, selector: str) -> str:
        """
        @return: The rendered text of the one element matching C{selector}.
        """
        [element] = self.find(selector)
        text: str = self.call("GET", f"{self.session}/element/{element}/text")
        return text

    def type(self, selector: str, text: str) -> None:
        """
        Type C{text} into the one element matching C{selector}.
        """
        [element] = self.find(selector)
        self.call("POST", f"{self.session}/element/{element}/value", {"text": text})

    def click(self, selector: str) -> None:
        """
        Click the one element matching C{selector}.
        """
        [element] = self.find(selector)
        self.call("POST", f"{self.session}/element/{element}/click", {})

    def title(self) -> str:
        """
        @return: The title of the page shown.
        """
        title: str = self.call("GET", f"{self.session}/title")
        return title

    def screenshot(self) -> bytes:
        """
        @return: A PNG of the window.
        """
        return base64.b64decode(self.call("GET", f"{self.session}/screenshot"))

    def quit(self) -> None:
        """
        End the session and chromedriver.
        """
        try:
            self.call("DELETE", self.session)
        finally:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(20)


class StatusEndToEndTests(SynchronousTestCase):
    """
    The operators' pages of a running ace-mail that has delivered mail.
    """

    count = 3

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.sinks = [
            Sink(freePort(), os.path.join(self.base, name)) for name in ("s1", "s2")
        ]
        self.aceMail = AceMail(
            os.path.join(self.base, "data"),
            self.sinks[0].port,
            self.sinks[1].port,
            os.path.join(self.base, "ace-mail.log"),
        )
        for sink in self.sinks:
            self.addCleanup(sink.kill)
            sink.start()
        self.addCleanup(self.aceMail.kill)
        self.aceMail.start()
        prefix = uuid.uuid4().hex[:8]
        testIds = {f"{prefix}-{n}" for n in range(self.count)}
        for testId in testIds:
            self.aceMail.submit(testId)
        try:
            waitFor(
                "the sinks to receive every message",
                lambda: testIds <= set(received(self.sinks)),
                30,
            )
            waitFor("the queue to empty", lambda: not self.aceMail.queue(), 30)
        except AssertionError as e:
            self.fail(f"{e}\nace-mail's log ends with:\n{self.aceMail.logTail()}")

    def get(self, path: str, token: bool = False) -> tuple[int, str, bytes]:
        """
        @return: The status, the content type and the body of a GET.
        """
        headers = {"Authorization": f"Bearer {self.aceMail.token}"} if token else {}
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{self.aceMail.apiPort}{path}", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return (
                    response.status,
                    response.headers["Content-Type"],
                    response.read(),
                )
        except urllib.error.HTTPError as e:
            return e.code, e.headers["Content-Type"], e.read()

    def test_metricsAndHealth(self) -> None:
        """
        Without a token, C{/metrics} counts the real deliveries by server
        with their latency and shows an empty queue, and C{/healthz}
        answers 200 with every check up; C{/status} wants the token.
        """
        status, contentType, body = self.get("/metrics")
        self.assertEqual((status, contentType.split(";")[0]), (200, "text/plain"))
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        delivered = {
            sample.labels["server"]: sample.value
            for sample in families["acemail_deliveries"].samples
            if sample.name.endswith("_total") and sample.labels["result"] == "delivered"
        }
        self.assertEqual(sum(delivered.values()), self.count)
        self.assertTrue(all(name.startswith("outgoing/") for name in delivered))
        latency = {
            s.name: s.value for s in families["acemail_queue_delivery_seconds"].samples
        }
        self.assertEqual(latency["acemail_queue_delivery_seconds_count"], self.count)
        depth = [s.value for s in families["acemail_queue_messages"].samples]
        self.assertEqual(depth, [0, 0, 0])

        status, _, body = self.get("/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(
            json.loads(body),
            {"status": "up", "checks": {"API listener": "up", "contact store": "up"}},
        )

        self.assertEqual(self.get("/status")[0], 401)
        status, contentType, body = self.get("/status", token=True)
        self.assertEqual((status, contentType), (200, "text/html; charset=utf-8"))

    def test_statusPageInChromium(self) -> None:
        """
        Headless Chromium, signed in with the API token through the page's
        form, shows the status page with the real deliveries, both servers
        and the chart of the last hour; a screenshot is kept.
        """
        chromium = shutil.which("chromium")
        chromedriver = shutil.which("chromedriver")
        if chromium is None or chromedriver is None:
            raise SkipTest(
                "Debian's chromium and chromium-driver are not installed; "
                ".ci/run installs them."
            )
        profile = tempfile.mkdtemp(prefix="chromium-", dir=self.base)
        browser = WebDriver(chromium, chromedriver, f"--user-data-dir={profile}")
        self.addCleanup(browser.quit)

        browser.go(f"http://{LOOPBACK}:{self.aceMail.apiPort}/status")
        self.assertEqual(browser.title(), "ace-mail status: sign in")
        browser.type("input[name=token]", self.aceMail.token)
        browser.click("button[type=submit]")
        waitFor(
            "the status page after signing in",
            lambda: browser.title() == "ace-mail status: ace-mail.test",
            30,
        )

        path = os.path.join(self.base, "status.png")
        with open(path, "wb") as f:
            f.write(browser.screenshot())
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

        self.assertEqual(browser.text("#delivered-total"), str(self.count))
        self.assertEqual(browser.text("#delivered-hour"), str(self.count))
        routes = browser.text("#routes")
        for sink, name in zip(self.sinks, ("outgoing/1", "outgoing/2"), strict=True):
            self.assertIn(f"{name} {LOOPBACK}:{sink.port} healthy", routes)
        self.assertEqual(len(browser.find("#chart rect.bar")), 60)
        self.assertIn("Up: API listener, contact store.", browser.text("#health"))
        self.assertEqual(browser.find("script"), [])
