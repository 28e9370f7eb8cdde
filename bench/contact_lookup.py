"""
How fast the SQLite contact store answers a lookup when it holds many
contacts.

It fills a fresh store with N contacts (10 million unless told otherwise),
in big transactions on a connection of its own, then opens the store as
ace-mail does and times L{SQLiteContactStore.get} over random lookups of
existing and missing ids, half each, in random order.

Run from the top of the repository::

    PYTHONPATH=. python bench/contact_lookup.py --contacts 10000000
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import sqlite3
import sys
import time
from typing import Iterator, Sequence

from ace_mail.store import Contact, SQLiteContactStore, newContactId
from ace_mail.store._contactsql import INSERT, contactRow

_DOMAINS = ("example.com", "example.net", "mail.example.org", "kunde.example.de")
_SUBJECTS = (
    "Question about my order",
    "Re: Invoice 2024-118273 is wrong",
    "Lieferung verspätet, bitte um Rückruf",
    "Cannot log in",
    "Fwd: Re: Re: contract renewal for next year and the new price list",
)


def _contact(rng: random.Random, contactId: str, number: int) -> Contact:
    """
    A contact of a plausible size: an address, a name, a subject, a
    Message-ID and zero to three references.
    """
    domain = rng.choice(_DOMAINS)
    references = tuple(
        f"<{number}.{i}.{rng.getrandbits(48):x}@{domain}>"
        for i in range(rng.randrange(4))
    )
    created = 1.7e9 + number
    return Contact(
        id=contactId,
        entrance="default",
        customerAddress=f"customer{number}@{domain}",
        customerName=f"Customer Number {number}",
        subject=rng.choice(_SUBJECTS),
        messageId=f"<{rng.getrandbits(64):x}.{number}@{domain}>",
        references=references,
        externalId=str(number) if number % 2 else None,
        created=created,
        ended=created + 3600 if number % 3 else None,
    )


def _fill(
    path: str, count: int, batch: int, sampled: set[int], rng: random.Random
) -> list[str]:
    """
    Insert C{count} contacts in transactions of C{batch} rows.

    @return: The ids of the contacts whose numbers are in C{sampled}.
    """
    kept: list[str] = []

    def rows(start: int, stop: int) -> Iterator[tuple[object, ...]]:
        for number in range(start, stop):
            contactId = newContactId()
            if number in sampled:
                kept.append(contactId)
            yield contactRow(_contact(rng, contactId, number))

    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA cache_size = -1000000")
    started = time.perf_counter()
    for start in range(0, count, batch):
        stop = min(start + batch, count)
        connection.execute("BEGIN")
        connection.executemany(INSERT, rows(start, stop))
        connection.execute("COMMIT")
        if (stop // batch) % 10 == 0 or stop == count:
            elapsed = time.perf_counter() - started
            print(
                f"  {stop:>12,} contacts  {elapsed:8.1f} s  {stop / elapsed:10,.0f}/s",
                flush=True,
            )
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return kept


def _percentile(ordered: Sequence[int], fraction: float) -> float:
    """
    @return: The value below which C{fraction} of C{ordered} lies, in
        microseconds.
    """
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000


def measure(options: argparse.Namespace) -> dict[str, float]:
    """
    Fill a new store as C{options} say, time the lookups and print them.

    @param options: C{contacts}, C{lookups}, C{batch}, C{path} and C{seed}.
    @return: The percentiles C{p50}, C{p99}, C{p99.9} and C{max} in
        microseconds, and C{fillSeconds}.
    """
    directory = os.path.dirname(os.path.abspath(options.path))
    os.makedirs(directory, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(options.path + suffix):
            os.remove(options.path + suffix)

    rng = random.Random(options.seed)
    SQLiteContactStore.open(options.path).close()
    existing = options.lookups // 2
    sampled = set(rng.sample(range(options.contacts), min(existing, options.contacts)))
    print(f"filling {options.path} with {options.contacts:,} contacts:")
    started = time.perf_counter()
    present = _fill(options.path, options.contacts, options.batch, sampled, rng)
    fillSeconds = time.perf_counter() - started
    size = sum(
        os.path.getsize(options.path + s)
        for s in ("", "-wal")
        if os.path.exists(options.path + s)
    )

    lookups = [(contactId, True) for contactId in present]
    while len(lookups) < options.lookups:
        lookups.append((newContactId(), False))
    rng.shuffle(lookups)

    store = SQLiteContactStore.open(options.path)
    latencies: list[int] = []
    found = 0
    clock = time.perf_counter_ns
    for contactId, exists in lookups:
        before = clock()
        result = store.get(contactId).result
        latencies.append(clock() - before)
        if (result is not None) != exists:
            raise SystemExit(
                f"lookup of {contactId} gave {result!r}; expected exists={exists}"
            )
        found += result is not None
    store.close()
    latencies.sort()

    rate = options.contacts / fillSeconds
    print(
        f"fill: {options.contacts:,} contacts in {fillSeconds:.1f} s "
        f"({rate:,.0f}/s); file {size / 2**20:,.0f} MiB"
    )
    missing = len(latencies) - found
    print(
        f"get(): {len(latencies):,} lookups ({found:,} existing, {missing:,} "
        "missing), page cache of the OS warm"
    )
    print(
        f"  p50 {_percentile(latencies, 0.50):.1f} us   "
        f"p99 {_percentile(latencies, 0.99):.1f} us   "
        f"p99.9 {_percentile(latencies, 0.999):.1f} us   "
        f"max {latencies[-1] / 1000:.1f} us   "
        f"mean {sum(latencies) / len(latencies) / 1000:.1f} us"
    )
    return {
        "p50": _percentile(latencies, 0.50),
        "p99": _percentile(latencies, 0.99),
        "p99.9": _percentile(latencies, 0.999),
        "max": latencies[-1] / 1000,
        "fillSeconds": fillSeconds,
    }


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=10_000_000)
    parser.add_argument("--lookups", type=int, default=100_000)
    parser.add_argument(
        "--batch", type=int, default=100_000, help="rows per fill transaction"
    )
    parser.add_argument(
        "--path",
        default="/tmp/ace-mail-bench/contacts.sqlite3",
        help="the database file; it is deleted first",
    )
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args(argv)
    if options.contacts < 1 or options.lookups < 2:
        parser.error("--contacts must be at least 1 and --lookups at least 2")

    print("command:", shlex.join([sys.executable, *sys.argv]))
    measure(options)


if __name__ == "__main__":
    main(sys.argv[1:])
