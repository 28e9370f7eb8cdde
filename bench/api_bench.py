"""
A benchmark of ace-mail's outgoing path: concurrent submitters put 4 KiB
messages through C{POST /v1/outgoing} of a real C{twistd -n ace-mail} that
relays them to two SMTP sinks on 127.0.0.1.

It prints the commands it ran and three figures: accepted messages per
second (until the last 202), delivered messages per second (until the sinks
hold every message) and ace-mail's peak resident memory (VmHWM).

The sinks are Postfix's C{smtp-sink} when it is installed; otherwise the
aiosmtpd sink of the end-to-end tests, which writes a file per message and
so is slower. Postfix comes from Debian's packages::

    echo 'postfix postfix/main_mailer_type select Local only' \\
        | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y postfix

Every loop is bounded by C{--timeout}; only 127.0.0.1 is used.
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO

from _common import LOOPBACK, canConnect, cpuSeconds, freePort, waitFor
from attrs import frozen

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


class SmtpSink:
    """
    Postfix's C{smtp-sink}, counting messages with C{-c}.
    """

    def __init__(self, port: int) -> None:
        self.command = [SMTP_SINK, "-u", "nobody", "-c", f"{LOOPBACK}:{port}", "1000"]
        self.port = port
        self.delivered = 0
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        assert self.process.stdout is not None
        threading.Thread(
            target=self._count, args=(self.process.stdout,), daemon=True
        ).start()

    def _count(self, output: IO[bytes]) -> None:
        pending = b""
        while chunk := output.read1(4096):
            pending += chunk
            counts = re.findall(rb"mesg=(\d+)", pending)
            if counts:
                self.delivered = int(counts[-1])
            pending = pending[-64:]

    def count(self) -> int:
        return self.delivered


class MaildirSink:
    """
    The end-to-end tests' aiosmtpd sink, counting the files it stored.
    """

    def __init__(self, port: int, directory: str) -> None:
        script = os.path.join(ROOT, "tests", "e2e", "sink.py")
        self.command = [sys.executable, script, "--port", str(port), "--dir", directory]
        self.port = port
        self.newDir = os.path.join(directory, "new")
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )

    def count(self) -> int:
        try:
            return len(os.listdir(self.newDir))
        except FileNotFoundError:
            return 0


def message(number: int, size: int) -> bytes:
    """
    The JSON body of one submission whose message is C{size} bytes long.
    """
    head = (
        "From: bench@example.com\r\nTo: sink@example.net\r\n"
        f"Subject: bench {number}\r\nMessage-ID: <bench-{number}@ace-mail.test>\r\n\r\n"
    )
    line = "x" * 76 + "\r\n"
    body = line * ((size - len(head)) // len(line))
    body += "y" * (size - len(head) - len(body) - 2) + "\r\n"
    return json.dumps(
        {
            "from": "bench@example.com",
            "to": ["sink@example.net"],
            "message": head + body,
        }
    ).encode("ascii")


def submitter(
    port: int,
    token: str,
    bodies: list[bytes],
    results: list[int],
    deadline: float,
) -> None:
    """
    POST each body over one kept-alive connection; count each status.
    """
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
    }
    for body in bodies:
        if time.monotonic() > deadline:
            results.append(0)
            continue
        try:
            connection.request("POST", "/v1/outgoing", body, headers)
            response = connection.getresponse()
            response.read()
            results.append(response.status)
        except (OSError, http.client.HTTPException):
            results.append(-1)
            connection.close()
            connection = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
    connection.close()


def procStatus(pid: int, field: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    return "?"


@frozen
class Figures:
    """
    What one run measured.

    @ivar accepted: Messages answered 202.
    @ivar acceptRate: Accepted messages per second, until the last answer.
    @ivar delivered: Messages the sinks received.
    @ivar deliverRate: Delivered messages per second, until the last one.
    @ivar cpu: ace-mail's CPU time over the run, per second of the run.
    @ivar peakKiB: ace-mail's peak resident memory (VmHWM) in KiB.
    @ivar others: The other answers (0 for not sent in time, -1 for a
        broken connection).
    """

    accepted: int
    acceptRate: float
    delivered: int
    deliverRate: float
    cpu: float
    peakKiB: int
    others: tuple[int, ...]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--submitters", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--sink", choices=["auto", "smtp-sink", "aiosmtpd"], default="auto"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds in all")
    arguments = parser.parse_args()
    deadline = time.monotonic() + arguments.timeout
    if arguments.sink == "auto":
        arguments.sink = "smtp-sink" if os.access(SMTP_SINK, os.X_OK) else "aiosmtpd"
    print(
        f"load: {arguments.messages} messages of {arguments.size} bytes from "
        f"{arguments.submitters} submitters through POST /v1/outgoing, "
        f"{arguments.runs} runs, sinks: {arguments.sink}"
    )
    runs = [oneRun(arguments, deadline, n) for n in range(1, arguments.runs + 1)]
    print(
        f"median of {len(runs)}: "
        f"accepted {statistics.median(r.acceptRate for r in runs):.0f} msgs/s, "
        f"delivered {statistics.median(r.deliverRate for r in runs):.0f} msgs/s "
        "end to end, "
        f"peak RSS {statistics.median(r.peakKiB for r in runs) / 1024:.1f} MiB"
    )
    if any(r.delivered < arguments.messages or r.others for r in runs):
        raise SystemExit("api_bench: some messages were refused or not delivered")


def oneRun(arguments: argparse.Namespace, deadline: float, number: int) -> Figures:
    """
    Start two sinks and ace-mail in a new folder, measure one load, stop
    them, and print the figures.
    """
    work = tempfile.mkdtemp(prefix="ace-mail-bench-")
    ports = [freePort(), freePort()]
    if arguments.sink == "smtp-sink":
        sinks: list[SmtpSink | MaildirSink] = [SmtpSink(p) for p in ports]
    else:
        sinks = [MaildirSink(p, os.path.join(work, f"sink{p}")) for p in ports]
    processes = [s.process for s in sinks]
    try:
        waitFor("the sinks", lambda: all(canConnect(p) for p in ports), deadline)
        figures = measure(arguments, work, sinks, processes, deadline, number)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
    if figures.delivered < figures.accepted or figures.others:
        print(f"run {number}: kept {work} for its log")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return figures


def startAceMail(
    work: str, sinks: list[SmtpSink | MaildirSink]
) -> tuple[subprocess.Popen[bytes], list[str], int, str]:
    """
    Start C{twistd -n ace-mail} relaying to the sinks.

    @return: The process, its command line, its API port and its token.
    """
    apiPort = freePort()
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    if not os.access(twistd, os.X_OK):
        twistd = shutil.which("twistd") or "twistd"
    dataDir = os.path.join(work, "data")
    command = [twistd, "-n", "--pidfile=", "ace-mail", "--dataDir", dataDir]
    command += ["--api", f"tcp:{apiPort}:interface={LOOPBACK}"]
    command += ["--heloName", "bench.test"]
    for n, sink in enumerate(sinks, 1):
        command += [f"--outgoingMailSmtpServer{n}", LOOPBACK]
        command += [f"--outgoingMailSmtpPort{n}", str(sink.port)]
    path = [ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    logPath = os.path.join(work, "ace-mail.log")
    with open(logPath, "ab") as log:
        aceMail = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=work,
            env=env,
        )
    try:
        waitFor(
            "ace-mail's API",
            lambda: aceMail.poll() is not None or canConnect(apiPort),
            time.monotonic() + 30,
        )
    except BaseException:
        aceMail.kill()
        aceMail.wait(10)
        raise
    if aceMail.poll() is not None:
        with open(logPath) as f:
            raise SystemExit(f"api_bench: ace-mail exited:\n{f.read()[-3000:]}")
    with open(os.path.join(dataDir, "api-token")) as f:
        token = f.read().strip()
    return aceMail, command, apiPort, token


def measure(
    arguments: argparse.Namespace,
    work: str,
    sinks: list[SmtpSink | MaildirSink],
    processes: list[subprocess.Popen[bytes]],
    deadline: float,
    number: int,
) -> Figures:
    """
    Put the load through a new ace-mail and measure it.
    """
    aceMail, command, apiPort, token = startAceMail(work, sinks)
    processes.insert(0, aceMail)
    bodies = [message(n, arguments.size) for n in range(arguments.messages)]
    shares = [bodies[i :: arguments.submitters] for i in range(arguments.submitters)]
    results: list[int] = []
    threads = [
        threading.Thread(
            target=submitter, args=(apiPort, token, share, results, deadline)
        )
        for share in shares
    ]
    cpuBefore = cpuSeconds(aceMail.pid)
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 60)
    acceptedAt = time.monotonic()
    accepted = results.count(202)

    def delivered() -> int:
        return sum(s.count() for s in sinks)

    while delivered() < accepted and time.monotonic() < deadline:
        if aceMail.poll() is not None:
            break
        time.sleep(0.01)
    deliveredAt = time.monotonic()
    alive = aceMail.poll() is None
    figures = Figures(
        accepted=accepted,
        acceptRate=accepted / (acceptedAt - started),
        delivered=delivered(),
        deliverRate=delivered() / (deliveredAt - started),
        cpu=(
            (cpuSeconds(aceMail.pid) - cpuBefore) / (deliveredAt - started)
            if alive
            else float("nan")
        ),
        peakKiB=int(procStatus(aceMail.pid, "VmHWM").split()[0]) if alive else 0,
        others=tuple(sorted(r for r in results if r != 202)),
    )
    if number == 1:
        print("ace-mail: " + shlex.join(command))
        print("sinks:    " + " ; ".join(shlex.join(s.command) for s in sinks))
    print(
        f"run {number}: accepted {figures.accepted} at {figures.acceptRate:.0f} "
        f"msgs/s ({acceptedAt - started:.2f} s); delivered {figures.delivered} at "
        f"{figures.deliverRate:.0f} msgs/s end to end ({deliveredAt - started:.2f} "
        f"s); ace-mail CPU {100 * figures.cpu:.0f}% of one core; peak RSS "
        f"{figures.peakKiB / 1024:.1f} MiB"
    )
    if figures.others:
        print(f"run {number}: other answers: {sorted(set(figures.others))}")
    return figures


if __name__ == "__main__":
    main()
