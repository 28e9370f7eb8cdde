"""
Profile a running ace-mail with py-spy while C{smtp-source} sends it the
load of C{bench/run}'s relay or replies scenario, and print where its time
went, function by function.

    python bench/profile_replies.py                     # replies, 2,000 messages
    python bench/profile_replies.py --scenario relay    # pass-through
    python bench/profile_replies.py --raw /tmp/stacks.txt --top 40

py-spy (C{pip install py-spy}) samples ace-mail's Python stacks from outside
the process, so the figures are those of an ace-mail that runs at its usual
speed, less the few per cent that sampling costs. Samples of the reactor
waiting in C{epoll} count as idle. Each function is reported with its own
share (the samples with the function at the top of the stack) and its
inclusive share (the function anywhere in the stack), as shares of the
wall time; the reactor's thread and the thread pool's (fsync, the contact
store) are reported apart.

Everything listens on 127.0.0.1; ace-mail, the sink and py-spy are stopped
at the end; every wait is bounded by C{--timeout}.
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from attrs import define, field

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import canConnect, freePort, waitFor  # noqa: E402
from proxy_bench import CUSTOMER, AceMail, SmtpSink, ensurePostfix, load  # noqa: E402

#: Leaf frames in which a thread waits: the reactor in C{epoll}, a worker
#: of a thread pool for its next task.
IDLE = (
    "poll (selectors.py",
    "doPoll (twisted/internet/epollreactor.py",
    "Condition.wait (",
)


def frameName(frame: str) -> str:
    """
    A py-spy frame, C{"function (path/to/file.py:line)"}, without its line
    number and with its path cut to the part after C{site-packages}, the
    standard library or the project's root, so that the samples of one
    function add up.
    """
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0]
    for marker in ("site-packages/", "lib/python3.11/", os.path.dirname(HERE) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


@define
class Thread:
    """
    The samples of one kind of thread: the reactor's, or the pool's.

    @ivar samples: All its samples, busy or idle.
    @ivar own: The busy samples in which each function was at the top of
        the stack.
    @ivar inclusive: The busy samples in which each function was anywhere
        in the stack.
    """

    samples: int = 0
    own: collections.Counter[str] = field(factory=collections.Counter)
    inclusive: collections.Counter[str] = field(factory=collections.Counter)

    @property
    def busy(self) -> int:
        """
        The samples in which the thread was not waiting.
        """
        return sum(self.own.values())


def readStacks(path: str) -> tuple[Thread, Thread]:
    """
    Read py-spy's raw (collapsed) output.

    @return: The reactor's thread (the one that started in C{twistd}) and
        the others together.
    """
    reactor, workers = Thread(), Thread()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            if not stack or not count.isdigit() or len(frames) < 2:
                continue
            samples = int(count)
            thread = reactor if frames[0].startswith("<module> (twistd") else workers
            thread.samples += samples
            if any(marker in frames[-1] for marker in IDLE):
                continue
            names = [frameName(frame) for frame in frames[1:]]
            thread.own[names[-1]] += samples
            for name in set(names):
                thread.inclusive[name] += samples
    return reactor, workers


def report(path: str, top: int) -> None:
    """
    Print the functions with the most samples, by own and inclusive time,
    as shares of the reactor thread's time (the wall time sampled).
    """
    reactor, workers = readStacks(path)
    wall = reactor.samples
    if not wall:
        print("no samples of the reactor's thread")
        return
    print(
        f"\nreactor thread: {wall} samples, busy {100 * reactor.busy / wall:.1f}%; "
        f"other threads: busy {100 * workers.busy / wall:.1f}% of that time"
    )
    for label, thread in (("reactor thread", reactor), ("other threads", workers)):
        for title, counts in (("own", thread.own), ("inclusive", thread.inclusive)):
            print(f"\n{label}, top {top} by {title} share of the wall time")
            for name, samples in counts.most_common(top):
                print(f"{100 * samples / wall:6.1f}%  {name}")


def main() -> None:
    """
    Start the sink and ace-mail, profile ace-mail under the load, report.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["replies", "relay"], default="replies")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rate", type=int, default=250, help="samples a second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--raw", help="keep py-spy's collapsed stacks here")
    parser.add_argument("--timeout", type=float, default=600, help="seconds in all")
    arguments = parser.parse_args()
    pySpy = shutil.which("py-spy")
    if pySpy is None:
        raise SystemExit("profile_replies: py-spy is missing; pip install py-spy")
    deadline = time.monotonic() + arguments.timeout
    ensurePostfix()

    work = tempfile.mkdtemp(prefix="ace-mail-profile-")
    raw = arguments.raw or os.path.join(work, "stacks.txt")
    sink = SmtpSink(freePort())
    aceMail: AceMail | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        waitFor("smtp-sink", lambda: canConnect(sink.port), deadline)
        folder = os.path.join(work, "ace-mail")
        os.makedirs(folder)
        aceMail = AceMail(folder, sink.port, deadline)
        rcpt = aceMail.createContact() if arguments.scenario == "replies" else CUSTOMER
        command = [pySpy, "record", "--idle", "--format", "raw", "-o", raw]
        command += ["--rate", str(arguments.rate), "--pid", str(aceMail.process.pid)]
        print("$ " + shlex.join(command), flush=True)
        spy = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        time.sleep(1)
        rate, _ = load(arguments, aceMail.proxyPort, rcpt, sink, deadline)
        print(f"ace-mail {arguments.scenario}: {rate:.0f} msgs/s (under py-spy)")
    finally:
        if spy is not None and spy.poll() is None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        if aceMail is not None:
            aceMail.stop()
        sink.process.terminate()
        sink.process.wait(10)
    report(raw, arguments.top)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
