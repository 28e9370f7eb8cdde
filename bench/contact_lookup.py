"""
How fast the contact store answers a lookup when it holds many contacts, in
SQLite or in PostgreSQL.

It fills a fresh store with N contacts (10 million unless told otherwise),
in big transactions on a connection of its own, then opens the store as
ace-mail does and times its C{get} over random lookups of existing and
missing ids, half each, in random order.

With C{--store postgresql://...} the store is L{PostgresContactStore} in a
schema of its own (C{--schema}, dropped and made again): the store makes its
tables and indexes, the contacts are written with C{COPY}, the table is
vacuumed and analysed, and C{get} is timed through the store's pool of
threads, one lookup at a time, on the reactor.  The same lookups are then
timed on one psycopg connection, as one prepared statement, and as the
store's transaction without the pool around it.

Run from the top of the repository::

    PYTHONPATH=. python bench/contact_lookup.py --contacts 10000000
    PYTHONPATH=. python bench/contact_lookup.py --contacts 10000000 \
        --store postgresql://acemail:acemail@127.0.0.1:5432/acemail_bench

Each run writes its figures to C{bench/results/} as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shlex
import sqlite3
import sys
import time
from typing import Any, Iterator, Sequence
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ace_mail.store import Contact, SQLiteContactStore, newContactId  # noqa: E402
from ace_mail.store._contactsql import INSERT, contactRow  # noqa: E402

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


def _summary(label: str, latencies: list[int]) -> dict[str, float]:
    """
    Sort C{latencies} (in nanoseconds), print their percentiles after
    C{label}, and return them.

    @return: C{p50}, C{p99}, C{p99.9}, C{max} and C{mean} in microseconds.
    """
    latencies.sort()
    figures = {
        "p50": _percentile(latencies, 0.50),
        "p99": _percentile(latencies, 0.99),
        "p99.9": _percentile(latencies, 0.999),
        "max": latencies[-1] / 1000,
        "mean": sum(latencies) / len(latencies) / 1000,
    }
    print(
        f"{label}\n  p50 {figures['p50']:.1f} us   p99 {figures['p99']:.1f} us   "
        f"p99.9 {figures['p99.9']:.1f} us   max {figures['max']:.1f} us   "
        f"mean {figures['mean']:.1f} us",
        flush=True,
    )
    return figures


def _lookups(
    rng: random.Random, present: list[str], count: int
) -> list[tuple[str, bool]]:
    """
    @return: C{count} ids to look up, each with whether it exists: those of
        C{present}, then new ids that no contact has, in random order.
    """
    lookups = [(contactId, True) for contactId in present]
    while len(lookups) < count:
        lookups.append((newContactId(), False))
    rng.shuffle(lookups)
    return lookups


def _check(contactId: str, result: object, exists: bool) -> None:
    """
    End the benchmark when a lookup found what it should not, or missed.
    """
    if (result is not None) != exists:
        raise SystemExit(
            f"lookup of {contactId} gave {result!r}; expected exists={exists}"
        )


def measure(options: argparse.Namespace) -> dict[str, float]:
    """
    Fill a new store as C{options} say, time the lookups and print them.

    @param options: C{contacts}, C{lookups}, C{batch}, C{path} and C{seed}.
    @return: The percentiles C{p50}, C{p99}, C{p99.9}, C{max} and C{mean} in
        microseconds, C{fillSeconds} and C{fileBytes}.
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
    lookups = _lookups(rng, present, options.lookups)

    store = SQLiteContactStore.open(options.path)
    latencies: list[int] = []
    clock = time.perf_counter_ns
    for contactId, exists in lookups:
        before = clock()
        result = store.get(contactId).result
        latencies.append(clock() - before)
        _check(contactId, result, exists)
    store.close()

    rate = options.contacts / fillSeconds
    print(
        f"fill: {options.contacts:,} contacts in {fillSeconds:.1f} s "
        f"({rate:,.0f}/s); file {size / 2**20:,.0f} MiB"
    )
    figures = _summary(
        f"get(): {len(latencies):,} lookups ({len(present):,} existing, "
        f"{len(latencies) - len(present):,} missing), page cache of the OS warm",
        latencies,
    )
    return {**figures, "fillSeconds": fillSeconds, "fileBytes": size}


def freshSchema(dsn: str, schema: str) -> str:
    """
    Drop and make C{schema} again, empty, in the database that C{dsn} names.

    @param dsn: A C{postgresql://} URI.
    @return: C{dsn} with C{schema} as its search path, so that a store made
        with it puts its tables there.
    @raise SystemExit: If C{dsn} is not a URI or C{schema} not a plain name.
    """
    import psycopg

    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise SystemExit("--store: write it as postgresql://USER:PASSWORD@HOST/DB")
    if not schema.isidentifier():
        raise SystemExit(f"--schema {schema!r}: use letters, digits and _ only")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        connection.execute(f"CREATE SCHEMA {schema}")
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def backendSeconds(dsn: str) -> float:
    """
    @return: The CPU seconds that the PostgreSQL server processes of every
        ace-mail node connected to C{dsn}'s database have used so far.
    """
    import psycopg
    from _common import cpuSeconds

    with psycopg.connect(dsn, autocommit=True) as connection:
        pids = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'ace-mail %'"
        ).fetchall()
    total = 0.0
    for (pid,) in pids:
        try:
            total += cpuSeconds(pid)
        except OSError:
            pass
    return total


def _copyFill(
    dsn: str, options: argparse.Namespace, sampled: set[int], rng: random.Random
) -> list[str]:
    """
    Write C{options.contacts} contacts with C{COPY}, one transaction of
    C{options.batch} rows at a time, into the table (and its indexes) that
    the store made; then vacuum and analyse it.

    @return: The ids of the contacts whose numbers are in C{sampled}.
    @raise SystemExit: If the fill takes longer than C{options.fill_timeout}.
    """
    import psycopg

    from ace_mail.store._contactsql import COLUMNS

    kept: list[str] = []
    count, batch = options.contacts, options.batch
    started = time.perf_counter()
    with psycopg.connect(dsn) as connection:
        for start in range(0, count, batch):
            stop = min(start + batch, count)
            with connection.cursor() as cursor:
                with cursor.copy(f"COPY contact ({COLUMNS}) FROM STDIN") as copy:
                    for number in range(start, stop):
                        contactId = newContactId()
                        if number in sampled:
                            kept.append(contactId)
                        copy.write_row(contactRow(_contact(rng, contactId, number)))
            connection.commit()
            elapsed = time.perf_counter() - started
            if (stop // batch) % 10 == 0 or stop == count:
                print(
                    f"  {stop:>12,} contacts  {elapsed:8.1f} s  "
                    f"{stop / elapsed:10,.0f}/s",
                    flush=True,
                )
            if elapsed > options.fill_timeout and stop < count:
                raise SystemExit(
                    f"contact_lookup: the fill wrote {stop:,} of {count:,} "
                    f"contacts in {elapsed:.0f} s, over --fill-timeout; "
                    "schema left as it is"
                )
    return kept


def _serverFacts(dsn: str) -> dict[str, Any]:
    """
    Vacuum and analyse the contact table, ask for a checkpoint, and read
    the table's sizes, the plan of a lookup and the server's settings.
    """
    import psycopg

    from ace_mail.store._contactsql import COLUMNS

    facts: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True) as connection:
        started = time.perf_counter()
        connection.execute("VACUUM (ANALYZE) contact")
        facts["vacuumAnalyzeSeconds"] = time.perf_counter() - started
        try:
            connection.execute("CHECKPOINT")
            facts["checkpoint"] = True
        except psycopg.errors.InsufficientPrivilege:
            facts["checkpoint"] = False
        row = connection.execute(
            "SELECT pg_total_relation_size('contact'), pg_relation_size('contact'),"
            " pg_indexes_size('contact'), version()"
        ).fetchone()
        assert row is not None
        facts["totalBytes"], facts["heapBytes"], facts["indexBytes"] = row[:3]
        facts["server"] = row[3]
        facts["indexes"] = {
            name: size
            for name, size in connection.execute(
                "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid)"
                " FROM pg_index WHERE indrelid = 'contact'::regclass"
            )
        }
        plan = connection.execute(
            f"EXPLAIN SELECT {COLUMNS} FROM contact WHERE id = 'x'"
        ).fetchall()
        facts["plan"] = [line for line, in plan]
        facts["settings"] = {
            name: connection.execute(f"SHOW {name}").fetchone()[0]  # type: ignore
            for name in ("shared_buffers", "effective_cache_size", "work_mem")
        }
    return facts


def _throughStore(
    store: Any, lookups: list[tuple[str, bool]]
) -> tuple[list[int], list[float]]:
    """
    Time C{store.get} on the reactor, one lookup at a time, each awaited;
    then time C{store.countContacts} (which the status page calls) twice,
    and close the store.

    @return: The latencies of C{get} in nanoseconds, from the call until its
        L{Deferred} fired on the reactor's thread, and the seconds of each
        C{countContacts}.
    """
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    latencies: list[int] = []
    counts: list[float] = []
    outcome: list[object] = []
    clock = time.perf_counter_ns

    async def timed() -> None:
        for contactId, exists in lookups:
            before = clock()
            result = await store.get(contactId)
            latencies.append(clock() - before)
            _check(contactId, result, exists)
        for _ in range(2):
            before = clock()
            await store.countContacts(time.time() - 86400)
            counts.append((clock() - before) / 1e9)

    def begin() -> None:
        done = Deferred.fromCoroutine(timed())
        done.addBoth(outcome.append)
        done.addBoth(lambda _: store.close())
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(begin)
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]
    if outcome and outcome[0] is not None:
        raise SystemExit(
            f"contact_lookup: a lookup through the store failed: {outcome}"
        )
    return latencies, counts


def _direct(dsn: str, lookups: list[tuple[str, bool]], asTheStore: bool) -> list[int]:
    """
    Time the store's lookup statement on one psycopg connection in this
    thread: as one prepared statement in autocommit mode, or (C{asTheStore})
    in a transaction of its own as the store runs it, on a connection whose
    lock timeout was set once.

    @return: The latencies in nanoseconds.
    """
    import psycopg

    from ace_mail.store._contactsql import COLUMNS

    statement = f"SELECT {COLUMNS} FROM contact WHERE id = %s"
    latencies: list[int] = []
    clock = time.perf_counter_ns
    with psycopg.connect(dsn, autocommit=not asTheStore) as connection:
        connection.execute("SET lock_timeout = '10s'")
        connection.commit()
        cursor = connection.cursor()
        for contactId, exists in lookups:
            before = clock()
            row = cursor.execute(statement, (contactId,), prepare=True).fetchone()
            if asTheStore:
                connection.commit()
            latencies.append(clock() - before)
            _check(contactId, row, exists)
    return latencies


def measurePostgres(options: argparse.Namespace) -> dict[str, Any]:
    """
    Fill a new schema in PostgreSQL as C{options} say, time the lookups
    through the store and on a plain connection, and print them.

    @param options: C{store}, C{schema}, C{contacts}, C{lookups}, C{batch},
        C{fill_timeout} and C{seed}.
    @return: The fill's seconds, the table's sizes and the server's facts,
        and the percentiles of each way of looking up.
    """
    import tempfile

    from ace_mail.store import PostgresContactStore, shownAddress

    dsn = freshSchema(options.store, options.schema)
    originals = tempfile.mkdtemp(prefix="ace-mail-lookup-")
    store = PostgresContactStore.open(dsn, node="bench", originalsDirectory=originals)
    rng = random.Random(options.seed)
    existing = options.lookups // 2
    sampled = set(rng.sample(range(options.contacts), min(existing, options.contacts)))
    where = f"{shownAddress(options.store)} schema {options.schema}"
    print(f"filling {where} with {options.contacts:,} contacts by COPY:", flush=True)
    started = time.perf_counter()
    present = _copyFill(dsn, options, sampled, rng)
    fillSeconds = time.perf_counter() - started
    facts = _serverFacts(dsn)
    print(
        f"fill: {options.contacts:,} contacts in {fillSeconds:.1f} s "
        f"({options.contacts / fillSeconds:,.0f}/s), then VACUUM (ANALYZE) in "
        f"{facts['vacuumAnalyzeSeconds']:.1f} s; table and indexes "
        f"{facts['totalBytes'] / 2**20:,.0f} MiB (heap "
        f"{facts['heapBytes'] / 2**20:,.0f} MiB, indexes "
        f"{facts['indexBytes'] / 2**20:,.0f} MiB); lookup plan: {facts['plan'][0]}",
        flush=True,
    )
    lookups = _lookups(rng, present, options.lookups)
    label = (
        f"{len(lookups):,} lookups ({len(present):,} existing, "
        f"{len(lookups) - len(present):,} missing)"
    )
    latencies, counts = _throughStore(store, lookups)
    viaStore = _summary(
        f"PostgresContactStore.get() through adbapi, one at a time: {label}",
        latencies,
    )
    print(
        "PostgresContactStore.countContacts(), twice: "
        + ", ".join(f"{seconds:.2f} s" for seconds in counts),
        flush=True,
    )
    os.rmdir(originals)
    prepared = _summary(
        f"psycopg, one connection, prepared SELECT, autocommit: {label}",
        _direct(dsn, lookups, False),
    )
    transaction = _summary(
        f"psycopg, one connection, the store's transaction (BEGIN, SELECT, "
        f"COMMIT): {label}",
        _direct(dsn, lookups, True),
    )
    return {
        "store": shownAddress(options.store),
        "schema": options.schema,
        "fillSeconds": fillSeconds,
        **facts,
        "storeGet": viaStore,
        "countContactsSeconds": counts,
        "preparedSelect": prepared,
        "storeTransactionDirect": transaction,
    }


def machine() -> dict[str, Any]:
    """
    @return: The machine's cores, load averages and memory as the run saw
        them, and its kernel.
    """
    with open("/proc/meminfo") as f:
        memory = dict(line.split(":", 1) for line in f)
    return {
        "cores": os.cpu_count(),
        "loadAverage": os.getloadavg(),
        "memTotalKiB": int(memory["MemTotal"].split()[0]),
        "memAvailableKiB": int(memory["MemAvailable"].split()[0]),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def writeResults(kind: str, figures: dict[str, Any]) -> str:
    """
    Write C{figures} as JSON to C{bench/results/KIND-TIMESTAMP.json}.

    @return: The path written.
    """
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(ROOT, "bench", "results", f"{kind}-{stamp}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(figures, f, indent=2)
        f.write("\n")
    print(f"figures written to {os.path.relpath(path, ROOT)}")
    return path


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
        help="the SQLite database file; it is deleted first",
    )
    parser.add_argument(
        "--store",
        help="a postgresql:// address: measure PostgresContactStore there instead",
    )
    parser.add_argument(
        "--schema",
        default="contact_lookup",
        help="the PostgreSQL schema to use; it is dropped and made again",
    )
    parser.add_argument(
        "--fill-timeout",
        type=float,
        default=1800,
        help="seconds the fill may take before the benchmark gives up",
    )
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args(argv)
    if options.contacts < 1 or options.lookups < 2:
        parser.error("--contacts must be at least 1 and --lookups at least 2")

    command = shlex.join([sys.executable, *sys.argv])
    print("command:", command)
    before = machine()
    if options.store is None:
        kind = "sqlite-lookup"
        figures: dict[str, Any] = measure(options)
    else:
        kind = "pg-lookup"
        figures = measurePostgres(options)
    writeResults(
        kind,
        {
            "command": command,
            "contacts": options.contacts,
            "lookups": options.lookups,
            "machineBefore": before,
            "machineAfter": machine(),
            **figures,
        },
    )


if __name__ == "__main__":
    main(sys.argv[1:])
