"""
A benchmark of ace-mail's POP3 intake: a real C{twistd -n ace-mail} empties a
Dovecot mailbox of 10 KiB customer emails on 127.0.0.1 into contacts, and in
the same run getmail6 empties the same mailbox, refilled with the same bytes,
into a maildir.

It prints the commands it ran and, for each tool, messages per second; for
ace-mail both until the mailbox is empty and the API lists every contact,
and until every automatic answer is at the sink. Then the ratio of
ace-mail's contacts rate to getmail's rate. Both fsync each message they
take. The order of the two alternates between runs, and the figures are
medians over the runs.

Dovecot (C{dovecot-pop3d}) and getmail6 come from Debian's packages; the
benchmark installs getmail6 with apt-get when it is missing and it runs as
root. Run it from the source tree::

    python bench/pop3_bench.py --messages 2000 --size 10240 --runs 3

Every wait is bounded by C{--timeout}; only 127.0.0.1 is used; it stops
every process it started and removes its folders.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
from typing import Callable

from _common import cpuSeconds, peakKiB
from attrs import frozen

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.e2e._harness import Sink, freePort  # noqa: E402
from tests.e2e._pop3harness import (  # noqa: E402
    AccountAceMail,
    Dovecot,
    accountConfig,
    answers,
    customerEmail,
)


def waitUntil(what: str, condition: Callable[[], bool], deadline: float) -> float:
    """
    Poll C{condition} every 20 ms until it holds.

    @return: The C{time.monotonic()} at which it was first seen to hold.
    @raise SystemExit: If C{deadline} (a C{time.monotonic()} value) passes.
    """
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"pop3_bench: gave up waiting for {what}")
        time.sleep(0.02)
    return time.monotonic()


def getmailProgram() -> str:
    """
    The path of getmail, installing Debian's getmail6 first if it is missing.

    @raise SystemExit: If it is missing and cannot be installed.
    """
    found = shutil.which("getmail")
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise SystemExit("pop3_bench: install getmail6 (apt-get install getmail6)")
    print("getmail is missing: apt-get install -y getmail6", flush=True)
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    if subprocess.run(command + ["getmail6"], env=environment).returncode:
        subprocess.run(["apt-get", "update", "-q"], env=environment, check=True)
        subprocess.run(command + ["getmail6"], env=environment, check=True)
    found = shutil.which("getmail")
    if found is None:
        raise SystemExit("pop3_bench: getmail6 installed no getmail program")
    return found


@frozen
class AceMailFigures:
    """
    What one ace-mail measurement found.

    @ivar startup: Seconds from starting twistd until its API listened.
    @ivar contacts: Seconds from starting twistd until the mailbox was empty
        and the API listed every contact, or L{None} without a contact list.
    @ivar answers: Seconds from starting twistd until every automatic answer
        was at the sink.
    @ivar cpu: CPU seconds ace-mail used, user and system.
    @ivar peakKiB: ace-mail's peak resident memory (VmHWM) in KiB.
    """

    startup: float
    contacts: float | None
    answers: float
    cpu: float
    peakKiB: int


def listedContacts(aceMail: AccountAceMail) -> int | None:
    """
    @return: How many contacts C{GET /v1/contacts} lists, or L{None} when
        ace-mail has no such endpoint.
    """
    try:
        return len(aceMail.contacts())
    except (AssertionError, KeyError, urllib.error.URLError):
        return None


def measureAceMail(
    work: str, dovecot: Dovecot, count: int, deadline: float, show: bool
) -> AceMailFigures:
    """
    Start ace-mail on a full mailbox and time it until every message is a
    contact and every answer is at the sink; then check the answers.
    """
    sink = Sink(freePort(), os.path.join(work, "sink"))
    config = os.path.join(work, "ace-mail.toml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(accountConfig(dovecot, pollInterval="1s"))
    aceMail = AccountAceMail(
        os.path.join(work, "data"), sink.port, os.path.join(work, "ace.log"), config
    )
    if show:
        print("ace-mail:", shlex.join(aceMail.commandLine()))
    sink.start()
    try:
        started = time.monotonic()
        aceMail.start()
        listening = time.monotonic()
        assert aceMail.process is not None
        pid = aceMail.process.pid
        emptied = waitUntil("an empty mailbox", lambda: not dovecot.waiting(), deadline)
        contacts = None
        if listedContacts(aceMail) is not None:
            contacts = waitUntil(
                f"{count} contacts in the API",
                lambda: listedContacts(aceMail) == count,
                deadline,
            )
        answered = waitUntil(
            f"{count} answers at the sink",
            lambda: len(sink.files()) >= count,
            deadline,
        )
        cpu = cpuSeconds(pid)
        peak = peakKiB(pid)
        time.sleep(1)
        got = answers(sink)
        ids = {a.contactId for a in got}
        if len(got) != count or len(ids) != count:
            raise SystemExit(
                f"pop3_bench: {len(got)} answers for {len(ids)} contacts, "
                f"expected {count}; see {aceMail.logPath}"
            )
    except BaseException:
        print("ace-mail's log ends with:\n" + aceMail.logTail(), file=sys.stderr)
        raise
    finally:
        aceMail.stop()
        sink.kill()
    return AceMailFigures(
        listening - started,
        None if contacts is None else max(contacts, emptied) - started,
        answered - started,
        cpu,
        peak,
    )


def measureGetmail(
    work: str, dovecot: Dovecot, count: int, deadline: float, show: bool
) -> float:
    """
    Run getmail once on a full mailbox, deleting each message it stores.

    @return: Seconds from its start until it exited with the mailbox empty.
    """
    maildir = os.path.join(work, "getmail-maildir")
    for folder in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(maildir, folder))
    # getmail refuses to write a maildir as root: it delivers as the
    # mailbox's owner instead, the user Dovecot serves the mailbox as.
    user = ""
    if os.geteuid() == 0:
        user = f"user = {dovecot.owner}\n"
        for folder, _, _ in os.walk(maildir):
            os.chown(folder, dovecot.uid, dovecot.gid)
    rc = os.path.join(work, "getmailrc")
    with open(rc, "w", encoding="ascii") as f:
        f.write(
            "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\n"
            f"port = {dovecot.port}\nusername = {dovecot.username}\n"
            f"password = {dovecot.password}\n"
            f"[destination]\ntype = Maildir\npath = {maildir}/\n{user}"
            "[options]\nverbose = 0\ndelete = true\nread_all = true\n"
            "received = false\ndelivered_to = false\n"
        )
    command = [getmailProgram(), f"--getmaildir={work}", f"--rcfile={rc}"]
    if show:
        print("getmail:", shlex.join(command))
    # getmail forks a child to deliver each message and at times never
    # notices that child's end (getmail6 issue 226): bound it well below the
    # whole deadline, so that a hang is reported as one.
    bound = min(max(1.0, deadline - time.monotonic()), 60 + count / 10)
    started = time.monotonic()
    try:
        done = subprocess.run(command, timeout=bound)
    except subprocess.TimeoutExpired:
        raise SystemExit(
            f"pop3_bench: getmail hung for {bound:.0f} s (getmail6 issue 226, "
            "its child reaper races); run again"
        ) from None
    took = time.monotonic() - started
    stored = len(os.listdir(os.path.join(maildir, "new")))
    if done.returncode or stored != count or dovecot.waiting():
        raise SystemExit(
            f"pop3_bench: getmail exited {done.returncode} with {stored} of "
            f"{count} messages stored, {dovecot.waiting()} left on the server"
        )
    return took


@frozen
class Run:
    """
    The figures of one run: ace-mail's, and getmail's seconds.
    """

    aceMail: AceMailFigures
    getmail: float


def oneRun(messages: list[bytes], deadline: float, number: int, aceFirst: bool) -> Run:
    """
    Start Dovecot in a new folder, fill it and time ace-mail, refill it and
    time getmail (in the other order when C{aceFirst} is false), and stop.
    """
    work = tempfile.mkdtemp(prefix="ace-mail-pop3-bench-")
    os.chmod(work, 0o755)
    dovecot = Dovecot()
    count = len(messages)
    try:
        dovecot.start()
        results: dict[str, object] = {}
        order = ["ace-mail", "getmail"] if aceFirst else ["getmail", "ace-mail"]
        for tool in order:
            dovecot.deliver(messages)
            folder = os.path.join(work, tool)
            os.makedirs(folder)
            if tool == "ace-mail":
                results[tool] = measureAceMail(
                    folder, dovecot, count, deadline, number == 1
                )
            else:
                results[tool] = measureGetmail(
                    folder, dovecot, count, deadline, number == 1
                )
    finally:
        dovecot.stop()
        shutil.rmtree(work, ignore_errors=True)
    ace = results["ace-mail"]
    getmail = results["getmail"]
    assert isinstance(ace, AceMailFigures) and isinstance(getmail, float)
    run = Run(ace, getmail)
    contacts = "-" if ace.contacts is None else f"{count / ace.contacts:.0f}"
    print(
        f"run {number} ({' then '.join(order)}): ace-mail {contacts} msgs/s to "
        f"contacts, {count / ace.answers:.0f} msgs/s to answers at the sink "
        f"(startup {ace.startup:.1f} s, CPU {ace.cpu:.1f} s); "
        f"getmail {count / getmail:.0f} msgs/s",
        flush=True,
    )
    return run


@frozen
class Summary:
    """
    The medians over several runs.

    @ivar aceRate: ace-mail's messages per second into contacts (into
        answers at the sink when the API lists no contacts).
    @ivar getmailRate: getmail's messages per second.
    @ivar ratio: The median of ace-mail's rate over getmail's, run by run.
    @ivar peakKiB: The highest peak resident memory of ace-mail, in KiB.
    """

    aceRate: float
    getmailRate: float
    ratio: float
    peakKiB: int


def measure(count: int, size: int, runs: int, deadline: float) -> Summary:
    """
    Time ace-mail and getmail C{runs} times each on C{count} messages of
    about C{size} bytes, print each run and the medians.
    """
    getmailProgram()
    messages = [customerEmail("bench", n, size=size).content for n in range(count)]
    print(
        f"load: {count} messages of about "
        f"{statistics.mean(map(len, messages)) / 1024:.1f} KiB in a Dovecot "
        f"maildir, {runs} runs",
        flush=True,
    )
    done = [oneRun(messages, deadline, n, n % 2 == 1) for n in range(1, runs + 1)]
    getmailRate = statistics.median(count / r.getmail for r in done)
    answerRate = statistics.median(count / r.aceMail.answers for r in done)
    timed = [(r.aceMail.contacts, r.getmail) for r in done if r.aceMail.contacts]
    summary = f"median of {len(done)}: ace-mail "
    if timed:
        aceRate = statistics.median(count / contacts for contacts, _ in timed)
        ratio = statistics.median(getmail / contacts for contacts, getmail in timed)
        summary += f"{aceRate:.0f} msgs/s to contacts, "
    else:
        aceRate = answerRate
        ratio = statistics.median(r.getmail / r.aceMail.answers for r in done)
    summary += f"{answerRate:.0f} msgs/s to answers; getmail {getmailRate:.0f} msgs/s"
    basis = "contacts" if timed else "answers"
    print(f"{summary}; ratio ace-mail/getmail ({basis}) {ratio:.2f}")
    peak = max(r.aceMail.peakKiB for r in done)
    return Summary(aceRate, getmailRate, ratio, peak)


def main() -> None:
    """
    Parse the command line, run, and print the medians and the ratio.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1200, help="seconds in all")
    arguments = parser.parse_args()
    if not 0 < arguments.messages <= 20000 or not 0 < arguments.runs <= 10:
        raise SystemExit("pop3_bench: --messages 1..20000 and --runs 1..10")
    deadline = time.monotonic() + arguments.timeout
    measure(arguments.messages, arguments.size, arguments.runs, deadline)


if __name__ == "__main__":
    main()
