"""
Relay throughput of two ace-mail nodes that share one PostgreSQL store,
against one node, on this machine and on 127.0.0.1.

Each setup starts new C{twistd -n ace-mail} nodes with their proxies on,
each with its own data directory and all with C{--store} on the same
PostgreSQL database (in a schema of their own, C{--schema}, dropped and made
again for each setup), relaying to one Postfix C{smtp-sink}.  Postfix's
C{smtp-source} then sends the load (by default 5,000 messages of 4 KiB over
20 sessions, a new connection per message): all of it to the one node, or
split in halves, each half to one node's proxy by a C{smtp-source} of its
own.  A rate runs from the first connection until the sink has counted every
message.

The setups, in order: one node and two nodes with pass-through mail; then
one node and two nodes with replies to a contact (RCPT TO:<ID@ace.test>),
the contact made through the first node's API, so that every message is
looked up in the shared store and rewritten; then, for reference, one node
with its default SQLite store, pass-through and replies.  With C{--runs}
they run several times, every other time in the reverse order, and the
medians are printed.  Each setup also reports the CPU share of each node,
of the PostgreSQL processes that serve them, of the sink, and of the whole
machine, which other work may share.

Run it from the source tree::

    python bench/scaleout_bench.py \\
        --store postgresql://acemail:acemail@127.0.0.1:5432/acemail_bench

Every wait is bounded by C{--timeout}; only 127.0.0.1 is used; it stops
every process it started and removes its folders.  The figures are written
as JSON to C{bench/results/scaleout-TIMESTAMP.json}.
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
from typing import Any

from _common import canConnect, cpuSeconds, freePort, peakKiB, waitFor
from contact_lookup import backendSeconds, freshSchema, machine, writeResults
from proxy_bench import AGENT, CUSTOMER, AceMail, SmtpSink


def split(total: int, parts: int) -> list[int]:
    """
    @return: C{total} cut into C{parts} whole shares that differ by one at
        most.
    """
    return [total // parts + (i < total % parts) for i in range(parts)]


def machineBusy() -> tuple[int, int]:
    """
    @return: The clock ticks all cores of the machine have spent busy, and
        in all, since it started, from C{/proc/stat}.
    """
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]
    return sum(ticks[:8]) - idle, sum(ticks[:8])


def splitLoad(
    arguments: argparse.Namespace,
    targets: list[tuple[int, str]],
    sink: SmtpSink,
    deadline: float,
) -> tuple[float, float]:
    """
    Run one C{smtp-source} for each target, together, the messages and
    sessions shared out evenly, and wait until the sink has counted every
    message.

    @param targets: The proxy port and the recipient of each share.
    @return: The messages per second from the first connection until the
        sink had them all, and the seconds that took.
    """
    messages = split(arguments.messages, len(targets))
    sessions = split(arguments.sessions, len(targets))
    commands = []
    for (port, rcpt), count, parallel in zip(targets, messages, sessions, strict=True):
        command = ["smtp-source", "-s", str(parallel), "-m", str(count)]
        command += ["-l", str(arguments.size), "-f", AGENT, "-t", rcpt]
        commands.append(command + [f"127.0.0.1:{port}"])
        print("$ " + shlex.join(commands[-1]), flush=True)
    before = sink.messages
    started = time.monotonic()
    sources = [subprocess.Popen(c, stdin=subprocess.DEVNULL) for c in commands]

    def failed() -> bool:
        return any(s.poll() not in (None, 0) for s in sources)

    try:
        waitFor(
            f"{arguments.messages} messages at the sink",
            lambda: sink.messages - before >= arguments.messages or failed(),
            deadline,
        )
        elapsed = time.monotonic() - started
        for source in sources:
            source.wait(max(1.0, deadline - time.monotonic()))
    finally:
        for source in sources:
            if source.poll() is None:
                source.kill()
                source.wait(10)
    counted = sink.messages - before
    codes = [s.returncode for s in sources]
    if any(codes) or counted < arguments.messages:
        raise SystemExit(
            f"scaleout_bench: smtp-source exited {codes}; the sink counted "
            f"{counted} of {arguments.messages}"
        )
    return counted / elapsed, elapsed


def setup(
    arguments: argparse.Namespace,
    work: str,
    sink: SmtpSink,
    nodes: int,
    replies: bool,
    postgres: bool,
    deadline: float,
) -> dict[str, Any]:
    """
    Start C{nodes} new ace-mail nodes, send the load through them and stop
    them.

    @param replies: Send replies to a contact made through the first node's
        API, rather than pass-through mail.
    @param postgres: Give the nodes the shared PostgreSQL store; else each
        has its default SQLite store.
    @return: The setup's figures.
    """
    name = (
        f"{nodes} node{'s' if nodes > 1 else ''}, "
        f"{'replies' if replies else 'pass-through'}, "
        f"{'PostgreSQL' if postgres else 'SQLite'}"
    )
    print(f"\n== {name}", flush=True)
    extra: dict[str, str] = {}
    if postgres:
        extra["--store"] = freshSchema(arguments.store, arguments.schema)
    started: list[AceMail] = []
    try:
        for number in range(nodes):
            folder = os.path.join(work, f"{len(os.listdir(work))}-node{number}")
            os.makedirs(folder)
            node = AceMail(folder, sink.port, deadline, extra)
            started.append(node)
            if number == 0:
                print("$ " + shlex.join(node.command), flush=True)
        rcpt = started[0].createContact() if replies else CUSTOMER
        targets = [(node.proxyPort, rcpt) for node in started]
        cpu = [cpuSeconds(node.process.pid) for node in started]
        server = backendSeconds(arguments.store) if postgres else None
        sinkCpu = cpuSeconds(sink.process.pid)
        busyBefore, totalBefore = machineBusy()
        rate, elapsed = splitLoad(arguments, targets, sink, deadline)
        busyAfter, totalAfter = machineBusy()
        sinkShare = (cpuSeconds(sink.process.pid) - sinkCpu) / elapsed
        cores = os.cpu_count() or 1
        machineShare = cores * (busyAfter - busyBefore) / (totalAfter - totalBefore)
        busy = [
            (cpuSeconds(node.process.pid) - before) / elapsed
            for node, before in zip(started, cpu, strict=True)
        ]
        if server is not None:
            server = (backendSeconds(arguments.store) - server) / elapsed
        peaks = [peakKiB(node.process.pid) / 1024 for node in started]
    finally:
        for node in started:
            node.stop()
    shown = ", ".join(f"{100 * b:.0f}%" for b in busy)
    line = f"{name}: {rate:.0f} msgs/s ({elapsed:.1f} s); CPU of the nodes {shown}"
    if server is not None:
        line += f"; PostgreSQL's processes for them {100 * server:.0f}%"
    line += (
        f"; smtp-sink {100 * sinkShare:.0f}%; whole machine {100 * machineShare:.0f}%"
    )
    print(line, flush=True)
    return {
        "setup": name,
        "nodes": nodes,
        "replies": replies,
        "store": "postgresql" if postgres else "sqlite",
        "msgsPerSecond": rate,
        "seconds": elapsed,
        "nodeCpuShare": busy,
        "postgresCpuShare": server,
        "sinkCpuShare": sinkShare,
        "machineCpuShare": machineShare,
        "nodePeakMiB": peaks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="a postgresql:// URI")
    parser.add_argument(
        "--schema",
        default="scaleout_bench",
        help="the schema the nodes use; it is dropped and made again",
    )
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument(
        "--setups",
        default="pass,replies,sqlite",
        help="which setups to run, of pass, replies and sqlite",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="how many times to run the setups, every other time backwards",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds in all")
    arguments = parser.parse_args()
    if not 0 < arguments.messages <= 100_000 or not 2 <= arguments.sessions <= 200:
        parser.error("--messages 1..100000 and --sessions 2..200")
    if not 0 < arguments.runs <= 10:
        parser.error("--runs 1..10")
    chosen = set(arguments.setups.split(","))
    if not chosen or chosen - {"pass", "replies", "sqlite"}:
        parser.error("--setups takes pass, replies and sqlite, separated by commas")
    for program in ("smtp-source", "smtp-sink"):
        if shutil.which(program) is None:
            raise SystemExit(f"scaleout_bench: {program} is missing (Postfix has it)")

    command = shlex.join([sys.executable, *sys.argv])
    print("command:", command, flush=True)
    before = machine()
    deadline = time.monotonic() + arguments.timeout
    plan = [
        (nodes, replies, True)
        for replies in (False, True)
        if ("replies" if replies else "pass") in chosen
        for nodes in (1, 2)
    ]
    if "sqlite" in chosen:
        plan += [(1, False, False), (1, True, False)]
    work = tempfile.mkdtemp(prefix="ace-mail-scaleout-bench-")
    sink = SmtpSink(freePort())
    rows = []
    try:
        waitFor("smtp-sink", lambda: canConnect(sink.port), deadline)
        print("$ " + shlex.join(sink.command), flush=True)
        for run in range(arguments.runs):
            for nodes, replies, postgres in plan[:: -1 if run % 2 else 1]:
                row = setup(arguments, work, sink, nodes, replies, postgres, deadline)
                rows.append({"run": run + 1, **row})
    finally:
        sink.process.terminate()
        sink.process.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\n{arguments.messages} messages of {arguments.size} bytes, "
        f"{arguments.sessions} sessions in all, one connection per message, "
        f"{os.cpu_count()} cores"
    )
    print(f"{'setup':<36} {'median':>8} msgs/s of {arguments.runs} run(s)")
    for name in dict.fromkeys(row["setup"] for row in rows):
        rates = [row["msgsPerSecond"] for row in rows if row["setup"] == name]
        shown = " ".join(f"{rate:.0f}" for rate in rates)
        print(f"{name:<36} {statistics.median(rates):>8.0f}   ({shown})")
    writeResults(
        "scaleout",
        {
            "command": command,
            "messages": arguments.messages,
            "sessions": arguments.sessions,
            "size": arguments.size,
            "machineBefore": before,
            "machineAfter": machine(),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
