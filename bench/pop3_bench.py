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

With C{--store postgresql://...}, each run also times a third ace-mail, on
the same mailbox refilled once more, whose contacts are in that PostgreSQL
database (in a schema of its own, C{pop3_bench}, dropped and made again for
each run) rather than in SQLite; its figures include the CPU seconds of the
server processes that served it.  The figures are written as JSON to
C{bench/results/pop3-TIMESTAMP.json}.

Dovecot (C{dovecot-pop3d}) and getmail6 come from Debian's packages; the
benchmark installs getmail6 with apt-get when it is missing and it runs as
root. Run it from the source tree::

    python bench/pop3_bench.py --messages 2000 --size 10240 --runs 3
    python bench/pop3_bench.py --messages 2000 --runs 3 \
        --store postgresql://acemail:acemail@127.0.0.1:5432/acemail_bench

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
from typing import Any, Callable

from _common import cpuSeconds, peakKiB
from attrs import asdict, frozen
from contact_lookup import backendSeconds, freshSchema, machine, writeResults

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
    @ivar serverCpu: CPU seconds that PostgreSQL's processes serving
        ace-mail used, or L{None} with SQLite.
    """

    startup: float
    contacts: float | None
    answers: float
    cpu: float
    peakKiB: int
    serverCpu: float | None = None


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
    work: str,
    dovecot: Dovecot,
    count: int,
    deadline: float,
    show: bool,
    store: str | None = None,
) -> AceMailFigures:
    """
    Start ace-mail on a full mailbox and time it until every message is a
    contact and every answer is at the sink; then check the answers.

    @param store: The C{--store} of ace-mail, or L{None} for SQLite.
    """
    sink = Sink(freePort(), os.path.join(work, "sink"))
    config = os.path.join(work, "ace-mail.toml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(accountConfig(dovecot, pollInterval="1s"))
    aceMail = AccountAceMail(
        os.path.join(work, "data"),
        sink.port,
        os.path.join(work, "ace.log"),
        config,
        [] if store is None else ["--store", store],
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
        serverCpu = None if store is None else backendSeconds(store)
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
        serverCpu,
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
    The figures of one run: ace-mail's with SQLite, getmail's seconds, and
    ace-mail's with PostgreSQL when it was measured.
    """

    aceMail: AceMailFigures
    getmail: float
    postgres: AceMailFigures | None = None


def _rates(count: int, figures: AceMailFigures) -> str:
    """
    @return: ace-mail's rates in one run, in words.
    """
    contacts = "-" if figures.contacts is None else f"{count / figures.contacts:.0f}"
    server = ""
    if figures.serverCpu is not None:
        server = f", PostgreSQL CPU {figures.serverCpu:.1f} s"
    return (
        f"{contacts} msgs/s to contacts, {count / figures.answers:.0f} msgs/s to "
        f"answers at the sink (startup {figures.startup:.1f} s, CPU "
        f"{figures.cpu:.1f} s{server})"
    )


def oneRun(
    messages: list[bytes],
    deadline: float,
    number: int,
    aceFirst: bool,
    store: str | None = None,
) -> Run:
    """
    Start Dovecot in a new folder, fill it and time ace-mail, refill it and
    time getmail (in the other order when C{aceFirst} is false), and stop.
    With C{store}, time ace-mail on PostgreSQL too, between the other two.
    """
    work = tempfile.mkdtemp(prefix="ace-mail-pop3-bench-")
    os.chmod(work, 0o755)
    dovecot = Dovecot()
    count = len(messages)
    show = number == 1
    order = ["ace-mail", "getmail"]
    if store is not None:
        order.insert(1, "ace-mail-postgresql")
    if not aceFirst:
        order.reverse()
    results: dict[str, Any] = {}
    kept = False
    try:
        dovecot.start()
        for tool in order:
            dovecot.deliver(messages)
            folder = os.path.join(work, tool)
            os.makedirs(folder)
            if tool == "ace-mail":
                results[tool] = measureAceMail(folder, dovecot, count, deadline, show)
            elif tool == "getmail":
                results[tool] = measureGetmail(folder, dovecot, count, deadline, show)
            else:
                assert store is not None
                uri = freshSchema(store, "pop3_bench")
                results[tool] = measureAceMail(
                    folder, dovecot, count, deadline, show, uri
                )
    except BaseException:
        kept = True
        print(f"pop3_bench: the run's files are kept in {work}", file=sys.stderr)
        raise
    finally:
        dovecot.stop()
        if not kept:
            shutil.rmtree(work, ignore_errors=True)
    run = Run(
        results["ace-mail"], results["getmail"], results.get("ace-mail-postgresql")
    )
    line = f"run {number} ({' then '.join(order)}): ace-mail (SQLite) "
    line += _rates(count, run.aceMail)
    if run.postgres is not None:
        line += "; ace-mail (PostgreSQL) " + _rates(count, run.postgres)
    print(f"{line}; getmail {count / run.getmail:.0f} msgs/s", flush=True)
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
    @ivar postgresRate: ace-mail's messages per second into contacts with
        PostgreSQL, or L{None} when it was not measured.
    @ivar runs: Each run's figures.
    """

    aceRate: float
    getmailRate: float
    ratio: float
    peakKiB: int
    postgresRate: float | None = None
    runs: tuple[Run, ...] = ()


def _median(count: int, figures: list[AceMailFigures]) -> tuple[float, float]:
    """
    @return: The median rates into contacts (into answers when the API lists
        no contacts) and into answers at the sink.
    """
    answerRate = statistics.median(count / f.answers for f in figures)
    timed = [f.contacts for f in figures if f.contacts]
    if not timed:
        return answerRate, answerRate
    return statistics.median(count / seconds for seconds in timed), answerRate


def measure(
    count: int, size: int, runs: int, deadline: float, store: str | None = None
) -> Summary:
    """
    Time ace-mail and getmail C{runs} times each on C{count} messages of
    about C{size} bytes, print each run and the medians.

    @param store: A C{postgresql://} URI to time ace-mail with PostgreSQL
        too, or L{None}.
    """
    getmailProgram()
    messages = [customerEmail("bench", n, size=size).content for n in range(count)]
    print(
        f"load: {count} messages of about "
        f"{statistics.mean(map(len, messages)) / 1024:.1f} KiB in a Dovecot "
        f"maildir, {runs} runs",
        flush=True,
    )
    done = [
        oneRun(messages, deadline, n, n % 2 == 1, store) for n in range(1, runs + 1)
    ]
    getmailRate = statistics.median(count / r.getmail for r in done)
    aceRate, answerRate = _median(count, [r.aceMail for r in done])
    timed = all(r.aceMail.contacts for r in done)
    ratio = statistics.median(
        r.getmail / (r.aceMail.contacts or r.aceMail.answers) for r in done
    )
    basis = "contacts" if timed else "answers"
    summary = (
        f"median of {len(done)}: ace-mail (SQLite) {aceRate:.0f} msgs/s to "
        f"{basis}, {answerRate:.0f} msgs/s to answers; "
    )
    postgresRate = None
    if store is not None:
        postgres = [r.postgres for r in done if r.postgres is not None]
        postgresRate, postgresAnswers = _median(count, postgres)
        summary += (
            f"ace-mail (PostgreSQL) {postgresRate:.0f} msgs/s to {basis}, "
            f"{postgresAnswers:.0f} msgs/s to answers; "
        )
    summary += f"getmail {getmailRate:.0f} msgs/s"
    print(f"{summary}; ratio ace-mail (SQLite)/getmail ({basis}) {ratio:.2f}")
    peak = max(r.aceMail.peakKiB for r in done)
    return Summary(aceRate, getmailRate, ratio, peak, postgresRate, tuple(done))


def main() -> None:
    """
    Parse the command line, run, and print the medians and the ratio.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1200, help="seconds in all")
    parser.add_argument(
        "--store", help="a postgresql:// URI: time ace-mail with PostgreSQL too"
    )
    arguments = parser.parse_args()
    if not 0 < arguments.messages <= 20000 or not 0 < arguments.runs <= 10:
        raise SystemExit("pop3_bench: --messages 1..20000 and --runs 1..10")
    command = shlex.join([sys.executable, *sys.argv])
    print("command:", command, flush=True)
    before = machine()
    deadline = time.monotonic() + arguments.timeout
    summary = measure(
        arguments.messages, arguments.size, arguments.runs, deadline, arguments.store
    )
    writeResults(
        "pop3",
        {
            "command": command,
            "messages": arguments.messages,
            "size": arguments.size,
            "machineBefore": before,
            "machineAfter": machine(),
            **asdict(summary),
        },
    )


if __name__ == "__main__":
    main()
