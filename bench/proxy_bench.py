"""
A benchmark of ace-mail's SMTP proxy against Postfix, on loopback.

Postfix's C{smtp-source} sends the same load (by default 5,000 messages of
4 KiB over 20 sessions, a new connection per message) three times, each
into the same C{smtp-sink}:

  1. through a new ace-mail's proxy, as pass-through mail;
  2. through a new ace-mail's proxy, as replies to one contact
     (RCPT TO:<ID@ace.test>), so that every message is rewritten;
  3. through Postfix, configured as a plain relay (it fsyncs before 250,
     as ace-mail does).

Each rate runs from the first connection until the sink has counted every
message. Then one message of 50 MiB goes through a third new ace-mail, and
the growth of its peak resident memory (VmHWM) is measured.

Postfix is installed from Debian's packages when it is missing (as root).
Its configuration in /etc/postfix is changed for the run and put back
after it. Every wait is bounded by C{--timeout}; only 127.0.0.1 is used;
every process the benchmark starts is stopped at its end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO

from _common import LOOPBACK, canConnect, cpuSeconds, freePort, peakKiB, waitFor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = "agent@agents.example"
CUSTOMER = "customer@customer.example"
POSTFIX_SETTINGS = [
    "inet_interfaces = loopback-only",
    "mynetworks = 127.0.0.0/8",
    "mydestination = localhost",
    "default_transport = smtp",
    "relay_transport = relay",
]


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """
    Print a command, run it to its end (at most 10 minutes) and check it.
    """
    print("$ " + shlex.join(command))
    return subprocess.run(command, check=True, text=True, timeout=600, **kwargs)


def ensurePostfix() -> None:
    """
    Install Postfix from Debian's packages, as a local-only system, unless
    C{smtp-source} and C{postfix} are there already.
    """
    if shutil.which("smtp-source") and shutil.which("postfix"):
        return
    selection = "postfix postfix/main_mailer_type select Local only\n"
    run(["debconf-set-selections"], input=selection)
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-q"], env=environment)
    run(["apt-get", "install", "-y", "-q", "postfix"], env=environment)


class SmtpSink:
    """
    Postfix's C{smtp-sink}, whose C{-c} output counts the messages.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.command = ["smtp-sink", "-u", "nobody", "-c", f"{LOOPBACK}:{port}", "1000"]
        self.messages = 0
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        assert self.process.stdout is not None
        threading.Thread(
            target=self._read, args=(self.process.stdout,), daemon=True
        ).start()

    def _read(self, output: IO[bytes]) -> None:
        tail = b""
        while chunk := output.read1(4096):
            tail = (tail + chunk)[-256:]
            counts = re.findall(rb"mesg=(\d+)", tail)
            if counts:
                self.messages = int(counts[-1])


class AceMail:
    """
    C{twistd -n ace-mail} with its proxy on, relaying to the sink.
    """

    def __init__(
        self,
        work: str,
        sinkPort: int,
        deadline: float,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.apiPort = freePort()
        self.proxyPort = freePort()
        self.work = work
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        options = {
            "--dataDir": os.path.join(work, "data"),
            "--api": f"tcp:{self.apiPort}:interface={LOOPBACK}",
            "--heloName": "ace.test",
            "--outgoingMailSmtpServer1": LOOPBACK,
            "--outgoingMailSmtpPort1": str(sinkPort),
            "--enableSmtpProxy": "1",
            "--smtpProxyPort": f"tcp:{self.proxyPort}:interface={LOOPBACK}",
            "--smtpProxySmtpServer": LOOPBACK,
            "--smtpProxySmtpPort": str(sinkPort),
            "--smtpProxyRerouteName": "ace.test",
            "--entranceAddress": "Support <support@example.com>",
            "--messageSizeLimit": str(60 * 2**20),
        }
        options.update(extra or {})
        self.command = [twistd if os.access(twistd, os.X_OK) else "twistd"]
        self.command += ["-n", "--pidfile=", "ace-mail"]
        for name, value in options.items():
            self.command += [name, value]
        path = [ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        self.logPath = os.path.join(work, "ace-mail.log")
        with open(self.logPath, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=work,
                env=environment,
            )
        try:
            waitFor(
                "ace-mail's proxy and API",
                lambda: self.process.poll() is not None
                or (canConnect(self.proxyPort) and canConnect(self.apiPort)),
                min(deadline, time.monotonic() + 30),
            )
        except BaseException:
            self.stop()
            raise
        if self.process.poll() is not None:
            with open(self.logPath) as f:
                raise SystemExit(f"proxy_bench: ace-mail exited:\n{f.read()[-3000:]}")
        with open(os.path.join(work, "data", "api-token")) as f:
            self.token = f.read().strip()

    def createContact(self) -> str:
        """
        Make a contact over the API.

        @return: Its address, C{ID@ace.test}.
        """
        connection = http.client.HTTPConnection(LOOPBACK, self.apiPort, timeout=30)
        body = {"customer": f"Customer <{CUSTOMER}>", "subject": "bench"}
        headers = {"Authorization": f"Bearer {self.token}"}
        connection.request("POST", "/v1/contacts", json.dumps(body), headers)
        response = connection.getresponse()
        answer = json.loads(response.read())
        connection.close()
        if response.status != 201:
            raise SystemExit(f"proxy_bench: POST /v1/contacts answered {answer}")
        address: str = answer["address"]
        return address

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class Postfix:
    """
    The system's Postfix, set up as a relay from a listener on C{port} to
    the sink; its configuration files are restored by L{stop}.
    """

    def __init__(self, work: str, port: int, sinkPort: int) -> None:
        self.work = work
        self.port = port
        self.sinkPort = sinkPort
        self.saved: dict[str, str] = {}

    def start(self) -> None:
        """
        Keep the configuration files, change them, and start Postfix.
        """
        for name in ("main.cf", "master.cf"):
            with open(os.path.join("/etc/postfix", name)) as f:
                self.saved[name] = f.read()
        settings = POSTFIX_SETTINGS + [
            f"relayhost = [{LOOPBACK}]:{self.sinkPort}",
            f"maillog_file_prefixes = /var, /dev/stdout, {self.work}",
            f"maillog_file = {os.path.join(self.work, 'postfix.log')}",
        ]
        run(["postconf", "-e"] + settings)
        run(["postconf", "-M", f"{self.port}/inet={self.port} inet n - n - - smtpd"])
        run(["postfix", "start"])
        run(["postsuper", "-d", "ALL"], capture_output=True)

    def stop(self) -> None:
        subprocess.run(["postfix", "stop"], timeout=60, capture_output=True)
        for name, text in self.saved.items():
            with open(os.path.join("/etc/postfix", name), "w") as f:
                f.write(text)
        subprocess.run(["postsuper", "-d", "ALL"], timeout=60, capture_output=True)


def load(
    arguments: argparse.Namespace,
    port: int,
    rcpt: str,
    sink: SmtpSink | None,
    deadline: float,
) -> tuple[float, int]:
    """
    Run C{smtp-source} against C{port} and wait until the sink has counted
    every message; without a sink, until C{smtp-source} has had every 250.

    @return: The messages per second, and how many the sink counted.
    """
    command = ["smtp-source", "-s", str(arguments.sessions)]
    command += ["-m", str(arguments.messages), "-l", str(arguments.size)]
    command += ["-f", AGENT, "-t", rcpt, f"{LOOPBACK}:{port}"]
    print("$ " + shlex.join(command))

    def atSink() -> int:
        if sink is None:
            return arguments.messages if source.poll() == 0 else 0
        return sink.messages - before

    before = 0 if sink is None else sink.messages
    started = time.monotonic()
    source = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        waitFor(
            f"{arguments.messages} messages at the sink",
            lambda: atSink() >= arguments.messages or (source.poll() not in (None, 0)),
            deadline,
        )
    except BaseException:
        source.kill()
        raise
    finally:
        if source.poll() is None:
            source.wait(max(1.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - started
    counted = atSink()
    if source.returncode != 0 or counted < arguments.messages:
        raise SystemExit(
            f"proxy_bench: smtp-source exited {source.returncode}; "
            f"the sink counted {counted} of {arguments.messages}"
        )
    return counted / elapsed, counted


def bigMessage(
    aceMail: AceMail, sink: SmtpSink, mebibytes: int, deadline: float
) -> tuple[int, int]:
    """
    Send one small message and then one of C{mebibytes} MiB through the
    proxy as pass-through mail, each until the sink has it.

    @return: ace-mail's VmHWM in KiB before and after the big message.
    """

    def send(size: int) -> None:
        line = b"x" * 76 + b"\r\n"
        head = f"From: <{AGENT}>\r\nTo: <{CUSTOMER}>\r\nSubject: {size}\r\n\r\n"
        message = head.encode() + line * (size // len(line))
        before = sink.messages
        with smtplib.SMTP(LOOPBACK, aceMail.proxyPort, timeout=300) as client:
            client.sendmail(AGENT, [CUSTOMER], message)
        waitFor("the message at the sink", lambda: sink.messages > before, deadline)

    send(4096)
    before = peakKiB(aceMail.process.pid)
    send(mebibytes * 2**20)
    return before, peakKiB(aceMail.process.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--big", type=int, default=50, help="MiB of the big message")
    parser.add_argument("--timeout", type=float, default=900, help="seconds in all")
    arguments = parser.parse_args()
    deadline = time.monotonic() + arguments.timeout
    ensurePostfix()
    work = tempfile.mkdtemp(prefix="ace-mail-proxy-bench-")
    sink = SmtpSink(freePort())
    started: list[AceMail | Postfix] = []
    rows = []
    try:
        waitFor("smtp-sink", lambda: canConnect(sink.port), deadline)
        print("$ " + shlex.join(sink.command))
        for name in ("pass-through", "replies"):
            folder = os.path.join(work, name)
            os.makedirs(folder)
            aceMail = AceMail(folder, sink.port, deadline)
            started.append(aceMail)
            print("$ " + shlex.join(aceMail.command))
            rcpt = CUSTOMER if name == "pass-through" else aceMail.createContact()
            cpu = cpuSeconds(aceMail.process.pid)
            clock = time.monotonic()
            rate, _ = load(arguments, aceMail.proxyPort, rcpt, sink, deadline)
            busy = (cpuSeconds(aceMail.process.pid) - cpu) / (time.monotonic() - clock)
            peak = peakKiB(aceMail.process.pid) / 1024
            rows.append((f"ace-mail proxy, {name}", rate, f"{peak:.1f} MiB", busy))
            aceMail.stop()

        postfix = Postfix(work, freePort(), sink.port)
        started.append(postfix)
        postfix.start()
        waitFor("Postfix's listener", lambda: canConnect(postfix.port), deadline)
        rate, _ = load(arguments, postfix.port, CUSTOMER, sink, deadline)
        rows.append(("Postfix relay (fsync before 250)", rate, "-", None))
        postfix.stop()

        folder = os.path.join(work, "big")
        os.makedirs(folder)
        aceMail = AceMail(folder, sink.port, deadline)
        started.append(aceMail)
        print("$ " + shlex.join(aceMail.command))
        before, after = bigMessage(aceMail, sink, arguments.big, deadline)
        aceMail.stop()
    finally:
        for thing in reversed(started):
            thing.stop()
        sink.process.terminate()
        sink.process.wait(10)

    print()
    print(
        f"{arguments.messages} messages of {arguments.size} bytes, "
        f"{arguments.sessions} sessions, one connection per message"
    )
    print(f"{'setup':<36} {'msgs/s':>8} {'peak RSS':>10} {'CPU':>6}")
    for label, rate, peak, busy in rows:
        cpu = "-" if busy is None else f"{100 * busy:.0f}%"
        print(f"{label:<36} {rate:>8.0f} {peak:>10} {cpu:>6}")
    postfixRate = rows[2][1]
    for label, rate, _, _ in rows[:2]:
        print(f"ratio {label} / Postfix: {rate / postfixRate:.2f}")
    print(
        f"one {arguments.big} MiB message through the proxy: VmHWM "
        f"{before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after, "
        f"growth {(after - before) / 1024:+.1f} MiB"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
