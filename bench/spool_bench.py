"""
Benchmark the spool: producers add 4 KiB messages concurrently, each waiting
for its acknowledgement (written and fsync'd) before adding the next, as
SMTP clients would. It prints messages per second and the fsyncs it took.

    python bench/spool_bench.py --messages 20000 --producers 20

The spool directory is kept between runs (deleting many files right before
a run makes file creation slow on some disks); the messages of a run are
removed at its end, so the directory holds a few segment files at most.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from functools import partial
from typing import Any

from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ace_mail.envelope import Envelope  # noqa: E402
from ace_mail.spool import Spool  # noqa: E402


def countFsyncs() -> itertools.count[int]:
    """
    Wrap C{os.fsync} to count its calls, from any thread.
    """
    counter = itertools.count()
    realFsync = os.fsync

    def fsync(fd: int) -> None:
        next(counter)
        realFsync(fd)

    os.fsync = fsync
    return counter


async def run(reactor: Any, options: argparse.Namespace) -> None:
    pool = ThreadPool(1, 1, "spool-bench")
    pool.start()
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    spool = Spool.open(options.dir, partial(deferToThreadPool, reactor, pool))
    for old in spool.recover():
        spool.remove(old.queueId)
    envelope = Envelope("bench@example.com", ["sink@example.net"])
    body = b"Subject: bench\r\n\r\n" + b"x" * (options.size - 18)
    perProducer = options.messages // options.producers
    fsyncs = countFsyncs()
    ids: list[str] = []

    async def produce() -> None:
        for _ignored in range(perProducer):
            ids.append(await spool.add(envelope, body, time.time()))

    first = next(fsyncs)
    started = time.perf_counter()
    await defer.gatherResults(
        [defer.Deferred.fromCoroutine(produce()) for _p in range(options.producers)]
    )
    elapsed = time.perf_counter() - started
    used = next(fsyncs) - first - 1
    for queueId in ids:
        spool.remove(queueId)
    await spool.close()
    count = len(ids)
    print(
        f"{count} messages of {options.size} bytes from {options.producers} "
        f"producers in {elapsed:.2f} s: {count / elapsed:,.0f} msgs/s, "
        f"{count * options.size / elapsed / 2**20:.1f} MiB/s, {used} fsyncs "
        f"({count / max(used, 1):.1f} messages per fsync)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--producers", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--dir", default="spool-bench-data")
    options = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor, options)))


if __name__ == "__main__":
    main()
