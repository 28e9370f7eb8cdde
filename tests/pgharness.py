"""
A real PostgreSQL for the tests of the PostgreSQL contact store.

The environment variable C{ACE_MAIL_TEST_POSTGRES} names the database (a DSN
such as C{postgresql://acemail:acemail@127.0.0.1:5432/acemail_test}, which
C{.ci/run} creates).  Each test gets a schema of its own in it, which the
store's connections use first and which is dropped after the test.  Without
the variable the tests skip, saying how to enable them; with
C{ACE_MAIL_REQUIRE_POSTGRES=1}, as C{.ci/run} sets, a missing or unreachable
server fails them instead.
"""

from __future__ import annotations

import os
import secrets
from typing import Any, NoReturn
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from ace_mail.store import PostgresContactStore

DSN_VARIABLE = "ACE_MAIL_TEST_POSTGRES"
REQUIRE_VARIABLE = "ACE_MAIL_REQUIRE_POSTGRES"
CONTROL_VARIABLE = "ACE_MAIL_TEST_POSTGRES_CTL"

EXAMPLE_DSN = "postgresql://acemail:acemail@127.0.0.1:5432/acemail_test"

_URI_SCHEMES = ("postgresql://", "postgres://")


def isUri(dsn: str) -> bool:
    """
    @return: Whether C{dsn} is a URI rather than C{key=value} words.
    """
    return dsn.startswith(_URI_SCHEMES)


def withParameters(dsn: str, **parameters: str) -> str:
    """
    Add connection parameters to a DSN in either of libpq's forms.  An
    C{options} parameter is added after the options the DSN has already;
    any other parameter replaces the DSN's own.

    @return: The DSN with C{parameters}.
    """
    if not isUri(dsn):
        words = conninfo_to_dict(dsn)
        for key, value in parameters.items():
            if key == "options" and words.get("options"):
                value = f"{words['options']} {value}"
            words[key] = value
        return make_conninfo("", **words)

    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    for key, value in parameters.items():
        earlier = [v for k, v in query if k == key]
        if key == "options" and earlier and earlier[-1]:
            value = f"{earlier[-1]} {value}"
        query = [(k, v) for k, v in query if k != key] + [(key, value)]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def withSearchPath(dsn: str, schema: str) -> str:
    """
    @return: C{dsn} with the option that makes its sessions look for tables
        in C{schema} and make new ones there.
    """
    return withParameters(dsn, options=f"-csearch_path={schema}")


def password(dsn: str) -> str | None:
    """
    @return: The password that C{dsn} carries, or L{None}.
    """
    value = conninfo_to_dict(dsn).get("password")
    return None if value is None else str(value)


def _unavailable(testCase: SynchronousTestCase, sentence: str) -> NoReturn:
    """
    Skip the test, or fail it when PostgreSQL is required.

    @param sentence: Why, and how to enable the test, starting in lower
        case.
    """
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        testCase.fail(f"{REQUIRE_VARIABLE}=1 makes these tests a must, but {sentence}")
    raise SkipTest(sentence[0].upper() + sentence[1:])


def _connect(dsn: str) -> psycopg.Connection[Any]:
    """
    Connect in autocommit mode, outside any store, as another program would.
    Set-up and clean-up use such a connection in the reactor thread, for a
    few statements on a server on the local network.
    """
    return psycopg.connect(dsn, autocommit=True, connect_timeout=10)


def testDsn(testCase: SynchronousTestCase) -> str:
    """
    @return: The DSN of the test database, as the environment gives it.
    @raise SkipTest: If it gives none and PostgreSQL is not required.
    """
    dsn = os.environ.get(DSN_VARIABLE, "")
    if not dsn:
        _unavailable(
            testCase,
            f"these tests need a PostgreSQL server: set {DSN_VARIABLE} to the"
            " DSN of a database they may fill, such as the one .ci/run"
            f" creates ({EXAMPLE_DSN}), to run them.",
        )
    return dsn


def schemaDsn(testCase: SynchronousTestCase, prefix: str = "t") -> str:
    """
    Make a schema of its own for a test, dropped with everything in it
    when the test ends.

    @param prefix: The start of the schema's name, the rest being random.
    @return: The DSN whose sessions use that schema.
    @raise SkipTest: If there is no PostgreSQL to use and none is required.
    """
    dsn = testDsn(testCase)
    schema = f"acemail_{prefix}_{secrets.token_hex(6)}"
    try:
        with _connect(dsn) as connection:
            connection.execute(
                sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema))
            )
    except psycopg.OperationalError as e:
        reason = (str(e).strip() or type(e).__name__).splitlines()[0]
        _unavailable(
            testCase,
            f"the PostgreSQL server that {DSN_VARIABLE} names"
            f" ({withoutPassword(dsn)}) does not answer ({reason}); start it or"
            " correct the DSN.",
        )

    def drop() -> None:
        with _connect(dsn) as connection:
            connection.execute("SET lock_timeout = '10s'")
            connection.execute(
                sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema))
            )

    testCase.addCleanup(drop)
    return withSearchPath(dsn, schema)


def execute(dsn: str, statement: str, *arguments: object) -> list[tuple[Any, ...]]:
    """
    Run one statement outside the store, as another program would.

    @return: Its rows, or an empty list for a statement that gives none.
    """
    with _connect(dsn) as connection:
        cursor = connection.execute(statement, arguments or None)  # type: ignore
        return list(cursor.fetchall()) if cursor.description else []


def withoutPassword(dsn: str) -> str:
    """
    @return: C{dsn} without its password, for the sentences of the tests.
    """
    if not isUri(dsn):
        words = conninfo_to_dict(dsn)
        words.pop("password", None)
        return make_conninfo("", **words)
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "password"]
    return urlunsplit(
        parts._replace(netloc=netloc, query=urlencode(query, quote_via=quote))
    )


class PostgresStoreCase(TestCase):
    """
    A test with a L{PostgresContactStore} for the node C{node-a} in a schema
    of its own.  Its L{Deferred}s fire in the reactor from the pool's
    threads, so the tests wait for them: they return them, or are
    coroutines that await them.
    """

    def setUp(self) -> None:
        self.dsn = schemaDsn(self)
        self.store = self.openStore()
        self.addCleanup(lambda: self.store.close())

    def openStore(self, node: str = "node-a", **options: Any) -> PostgresContactStore:
        """
        @param options: More arguments of L{PostgresContactStore.open}.
        @return: A new store object over this test's schema, which the caller
            closes.
        """
        options.setdefault("originalsDirectory", self.mktemp())
        return PostgresContactStore.open(self.dsn, node=node, **options)

    def rowsOutside(self, statement: str, *arguments: object) -> list[tuple[Any, ...]]:
        """
        @return: The rows of C{statement} read through a connection of its
            own, as another program would.
        """
        return execute(self.dsn, statement, *arguments)
