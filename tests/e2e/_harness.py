# -*- test-case-name: tests.e2e.test_outgoing,tests.e2e.test_proxy -*-
"""
The real processes of the end-to-end tests: ace-mail under C{twistd}, SMTP
sinks, and the messages that go between them.

Every wait here is bounded in time, and every address is 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any, Callable, Iterable, Sequence

from attrs import frozen

SINK_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sink.py")
LOOPBACK = "127.0.0.1"


def _twistd() -> str:
    """
    The C{twistd} of the Python that runs the tests.
    """
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("twistd")
    if found is None:
        raise AssertionError(f"no twistd beside {sys.executable} or on the PATH")
    return found


def _sourceRoot() -> str:
    """
    The folder that holds the ace_mail package the tests import, so that the
    child process runs the same code.
    """
    import ace_mail

    return os.path.dirname(os.path.dirname(os.path.abspath(ace_mail.__file__)))


_portsGiven: set[int] = set()


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now, and that this
    process has not handed out before.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port: int = s.getsockname()[1]
        if port not in _portsGiven:
            _portsGiven.add(port)
            return port
    raise AssertionError("found no unused port on 127.0.0.1 in 100 tries")


def waitFor(what: str, condition: Callable[[], bool], timeout: float) -> None:
    """
    Poll C{condition} every 50 ms until it holds, for at most C{timeout}
    seconds.

    @raise AssertionError: naming C{what} if the time runs out.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def _canConnect(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


@frozen
class Delivery:
    """
    One message that a sink stored.

    @ivar mailFrom: Its MAIL FROM address.
    @ivar recipients: Its RCPT TO addresses, in order.
    @ivar content: The message, as the sink received it after DATA.
    """

    mailFrom: str
    recipients: tuple[str, ...]
    content: bytes


class Sink:
    """
    One aiosmtpd sink (see C{sink.py}) in its own process, so that it can be
    killed and started again on the same port.
    """

    def __init__(self, port: int, directory: str) -> None:
        self.port = port
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """
        Start the sink and wait (at most 20 s) until it listens.
        """
        self.process = subprocess.Popen(
            [sys.executable, SINK_SCRIPT, "--port", str(self.port)]
            + ["--dir", self.directory],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        process = self.process
        waitFor(
            f"the sink on port {self.port}",
            lambda: process.poll() is not None or _canConnect(self.port),
            20,
        )
        if process.poll() is not None:
            raise AssertionError(f"the sink on port {self.port} exited")

    def kill(self) -> None:
        """
        Kill the sink with SIGKILL and reap it.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def files(self) -> list[str]:
        """
        The paths of the messages this sink has stored so far.
        """
        new = os.path.join(self.directory, "new")
        if not os.path.isdir(new):
            return []
        return [os.path.join(new, name) for name in os.listdir(new)]

    def deliveries(self) -> list[Delivery]:
        """
        The messages this sink has stored so far, with their envelopes.
        """
        found = []
        for path in self.files():
            name = os.path.basename(path) + ".json"
            with open(os.path.join(self.directory, "envelope", name)) as f:
                envelope = json.load(f)
            with open(path, "rb") as f:
                content = f.read()
            recipients = tuple(envelope["recipients"])
            found.append(Delivery(envelope["mailFrom"], recipients, content))
        return found


class AceMail:
    """
    C{twistd -n ace-mail} in its own process, relaying to two sinks, with a
    small client for its API.
    """

    def __init__(self, dataDir: str, port1: int, port2: int, logPath: str) -> None:
        self.dataDir = dataDir
        self.apiPort = freePort()
        self.port1 = port1
        self.port2 = port2
        self.logPath = logPath
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""

    def commandLine(self) -> list[str]:
        """
        The command that starts ace-mail.
        """
        return [
            _twistd(),
            "-n",
            "--pidfile=",
            "ace-mail",
            "--dataDir",
            self.dataDir,
            "--api",
            f"tcp:{self.apiPort}:interface={LOOPBACK}",
            "--outgoingMailSmtpServer1",
            LOOPBACK,
            "--outgoingMailSmtpPort1",
            str(self.port1),
            "--outgoingMailSmtpServer2",
            LOOPBACK,
            "--outgoingMailSmtpPort2",
            str(self.port2),
            "--minimalBackoffTime",
            "1",
            "--maximalBackoffTime",
            "2",
            "--serverSetAsideTime",
            "1",
            "--heloName",
            "ace-mail.test",
        ]

    def start(self) -> None:
        """
        Start ace-mail and wait (at most 30 s) until its API listens.
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [_sourceRoot()] + [p for p in [env.get("PYTHONPATH")] if p]
        )
        with open(self.logPath, "ab") as log:
            self.process = subprocess.Popen(
                self.commandLine(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=os.path.dirname(self.logPath),
                env=env,
            )
        process = self.process
        waitFor(
            "ace-mail's API to listen",
            lambda: process.poll() is not None or _canConnect(self.apiPort),
            30,
        )
        if process.poll() is not None:
            raise AssertionError(f"ace-mail exited at start:\n{self.logTail()}")
        with open(os.path.join(self.dataDir, "api-token"), encoding="ascii") as f:
            self.token = f.read().strip()

    def kill(self) -> None:
        """
        Kill ace-mail with SIGKILL and reap it.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        """
        Stop ace-mail with SIGTERM, or SIGKILL after 20 s.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def logTail(self, lines: int = 40) -> str:
        """
        The last lines of ace-mail's log, for failure messages.
        """
        try:
            with open(self.logPath, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{self.apiPort}{path}",
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def submit(self, testId: str) -> str:
        """
        Send one test message through C{POST /v1/outgoing}.

        @return: Its queue id.
        @raise AssertionError: if ace-mail does not answer 202.
        @raise OSError: if ace-mail cannot be reached.
        """
        status, answer = self._request(
            "POST",
            "/v1/outgoing",
            {
                "from": "a@example.com",
                "to": ["b@example.net"],
                "message": message(testId),
            },
        )
        if status != 202:
            raise AssertionError(f"POST /v1/outgoing answered {status}: {answer}")
        queueId: str = answer["queueId"]
        return queueId

    def queue(self) -> list[dict[str, Any]]:
        """
        The entries of C{GET /v1/queue}.
        """
        status, answer = self._request("GET", "/v1/queue")
        if status != 200:
            raise AssertionError(f"GET /v1/queue answered {status}: {answer}")
        entries: list[dict[str, Any]] = answer["queue"]
        return entries


class ProxyAceMail(AceMail):
    """
    C{twistd -n ace-mail} with its SMTP proxy on, relaying the proxy's mail
    and all other mail to one sink, with the contact endpoints of its API.

    @ivar proxyPort: The port of the proxy on 127.0.0.1.
    """

    rerouteName = "ace.test"
    entrance = "Support <support@example.com>"

    def __init__(
        self, dataDir: str, sinkPort: int, logPath: str, options: Sequence[str] = ()
    ) -> None:
        """
        @param options: More options for the command line, such as
            C{["--contactRetentionHours", "0.002"]}.
        """
        super().__init__(dataDir, sinkPort, sinkPort, logPath)
        self.proxyPort = freePort()
        self.options = list(options)

    def commandLine(self) -> list[str]:
        sink = str(self.port1)
        options = {
            "--dataDir": self.dataDir,
            "--api": f"tcp:{self.apiPort}:interface={LOOPBACK}",
            "--heloName": self.rerouteName,
            "--outgoingMailSmtpServer1": LOOPBACK,
            "--outgoingMailSmtpPort1": sink,
            "--enableSmtpProxy": "1",
            "--smtpProxyPort": f"tcp:{self.proxyPort}:interface={LOOPBACK}",
            "--smtpProxySmtpServer": LOOPBACK,
            "--smtpProxySmtpPort": sink,
            "--smtpProxyRerouteName": self.rerouteName,
            "--entranceAddress": self.entrance,
            "--minimalBackoffTime": "1",
            "--maximalBackoffTime": "2",
        }
        command = [_twistd(), "-n", "--pidfile=", "ace-mail"]
        for name, value in options.items():
            command += [name, value]
        return command + self.options

    def start(self) -> None:
        """
        Start ace-mail and wait (at most 30 s) until its API and its proxy
        listen.
        """
        super().start()
        process = self.process
        assert process is not None
        waitFor(
            "the SMTP proxy to listen",
            lambda: process.poll() is not None or _canConnect(self.proxyPort),
            30,
        )
        if process.poll() is not None:
            raise AssertionError(f"ace-mail exited at start:\n{self.logTail()}")

    def createContact(
        self, customer: str, subject: str, messageId: str
    ) -> dict[str, Any]:
        """
        Make a contact with C{POST /v1/contacts}.

        @return: The contact as the API shows it, with its C{id} and
            C{address}.
        @raise AssertionError: If ace-mail does not answer 201.
        """
        body = {"customer": customer, "subject": subject, "messageId": messageId}
        status, answer = self._request("POST", "/v1/contacts", body)
        if status != 201:
            raise AssertionError(f"POST /v1/contacts answered {status}: {answer}")
        contact: dict[str, Any] = answer
        return contact

    def endContact(self, contactId: str) -> dict[str, Any]:
        """
        End a contact with C{POST /v1/contacts/ID/end}.

        @return: The ended contact as the API shows it.
        @raise AssertionError: If ace-mail does not answer 200.
        """
        status, answer = self._request("POST", f"/v1/contacts/{contactId}/end")
        if status != 200:
            raise AssertionError(
                f"ending contact {contactId} answered {status}: {answer}"
            )
        contact: dict[str, Any] = answer
        return contact


def message(testId: str) -> str:
    """
    A test message carrying C{testId} in C{X-Test-Id} and a digest of its
    body in its last line, so that a truncated copy is seen.
    """
    body = [f"Test message {testId}."]
    body += [f"line {n} " + "x" * 60 for n in range(40)]
    body += [".", "..a line that starts with dots", "."]
    digest = hashlib.sha256("\n".join(body).encode("ascii")).hexdigest()
    headers = [
        "From: a@example.com",
        "To: b@example.net",
        f"Subject: end-to-end {testId}",
        f"Message-ID: <{testId}@ace-mail.test>",
        f"X-Test-Id: {testId}",
    ]
    return "\r\n".join(headers + [""] + body + [f"digest {digest}"]) + "\r\n"


def _readStored(path: str) -> str:
    """
    The X-Test-Id of one stored message, after checking that it is whole.

    @raise AssertionError: if the copy has no X-Test-Id or its body does not
        match its digest.
    """
    with open(path, "rb") as f:
        text = f.read().decode("ascii")
    head, _, bodyText = text.replace("\r\n", "\n").partition("\n\n")
    testIds = [
        line.split(":", 1)[1].strip()
        for line in head.split("\n")
        if line.lower().startswith("x-test-id:")
    ]
    body = bodyText.rstrip("\n").split("\n")
    digest = hashlib.sha256("\n".join(body[:-1]).encode("ascii")).hexdigest()
    if len(testIds) != 1 or body[-1] != f"digest {digest}":
        raise AssertionError(f"{path} is not a whole test message:\n{text[:2000]}")
    return testIds[0]


def settled(sinks: list[Sink], quiet: float = 0.5, timeout: float = 10) -> None:
    """
    Wait until the sinks have stored nothing new for C{quiet} seconds (at
    most C{timeout} seconds), so that a message whose last byte was already
    sent is counted.
    """
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        count = sum(len(sink.files()) for sink in sinks)
        if count == seen:
            return
        seen = count
        time.sleep(quiet)
    raise AssertionError(f"the sinks kept receiving for {timeout:g}s")


def received(sinks: Iterable[Sink]) -> Counter[str]:
    """
    How many copies of each test message the sinks hold.
    """
    return Counter(_readStored(path) for sink in sinks for path in sink.files())
