"""
Tests for L{ace_mail.status}, the status page's HTML: what it shows, that
hostile text stays text, and the chart on the reactor clock as C{/status}
draws it.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from twisted.trial.unittest import SynchronousTestCase

from ace_mail.accounts import AccountStatus
from ace_mail.sender import ServerStatus
from ace_mail.status import (
    Check,
    QueueStateView,
    RouteView,
    ServerView,
    Snapshot,
    renderLogin,
    renderStatus,
)
from tests.pagesfakes import MINUTE, TOKEN, PagesMixin, entry

HOSTILE = '<script>alert("owned")</script><img src=x onerror=alert(1)>&amp;'


class Page(HTMLParser):
    """
    The elements and the text of a page.
    """

    def __init__(self, page: bytes) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.chunks: list[str] = []
        self.feed(page.decode("utf-8"))
        self.close()
        self.text = " ".join(" ".join(self.chunks).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def snapshot(**changes: object) -> Snapshot:
    """
    @return: A snapshot of a quiet server, with C{changes}.
    """
    values: dict[str, object] = dict(
        now=MINUTE,
        hostname="mx.example",
        version="1.2.3",
        checks=(Check("API listener", None), Check("contact store", None)),
        routes=(
            RouteView(
                "outgoing",
                (
                    ServerView(
                        "outgoing/1", "smtp1.example:25", True, None, 2, 40, 3, 1
                    ),
                    ServerView(
                        "outgoing/2", "smtp2.example:587", True, None, 0, 2, 0, 0
                    ),
                ),
            ),
        ),
        queue=(
            QueueStateView("queued", 0, None),
            QueueStateView("active", 0, None),
            QueueStateView("deferred", 0, None),
        ),
        accounts=(),
        contacts=(("open", 7), ("ended", 2), ("expired", 1)),
        perMinute=tuple((MINUTE - 60 * (59 - n), 0) for n in range(60)),
    )
    values.update(changes)
    return Snapshot(**values)  # type: ignore[arg-type]


class RenderingTests(SynchronousTestCase):
    """
    L{renderStatus}: the page from a snapshot.
    """

    def test_routesAndServers(self) -> None:
        """
        Each server of each route is listed with its address, its state,
        its connections and its recipients by result, with the totals.
        """
        page = Page(renderStatus(snapshot()))
        self.assertIn(
            "outgoing outgoing/1 smtp1.example:25 healthy 2 40 3 1", page.text
        )
        self.assertIn("all routes 42 3 1", page.text)
        self.assertIn("Up: API listener, contact store.", page.text)
        self.assertIn("ace-mail on mx.example", page.text)

    def test_setAsideServer(self) -> None:
        """
        A server that is set aside says until when, and for how long more.
        """
        aside = ServerView(
            "proxy/1", "relay.example:25", False, MINUTE + 40, 0, 0, 5, 0
        )
        page = Page(renderStatus(snapshot(routes=(RouteView("proxy", (aside,)),))))
        self.assertIn(
            "proxy/1 relay.example:25 set aside until 2023-11-14 22:14:40 UTC (40 s more)",
            page.text,
        )

    def test_queueByStateWithOldest(self) -> None:
        """
        The queue shows each state's count and its oldest message: its id,
        how long it has waited, its route and its last error.
        """
        oldest = entry(
            "q7", "deferred", "outgoing", MINUTE - 7200, "451 4.3.0 try later"
        )
        queue = (
            QueueStateView("queued", 1, entry("q9", "queued", "proxy", MINUTE - 5)),
            QueueStateView("active", 0, None),
            QueueStateView("deferred", 3, oldest),
        )
        page = Page(renderStatus(snapshot(queue=queue)))
        self.assertIn("4 messages in the queue.", page.text)
        self.assertIn(
            "deferred 3 q7 2.0 h (2023-11-14 20:14:00 UTC) outgoing 451 4.3.0 try later",
            page.text,
        )
        self.assertIn("queued 1 q9 5 s", page.text)

    def test_accounts(self) -> None:
        """
        Each account shows its last poll, its last result and its figures;
        one never polled says so.
        """
        accounts = (
            AccountStatus(
                "support-pop", lastPoll=MINUTE - 90, lastResult="ok", messagesTaken=12
            ),
            AccountStatus(
                "sales-pop",
                lastPoll=MINUTE - 30,
                lastResult="cannot log in: -ERR bad password",
                errors=4,
                consecutiveFailures=2,
                nextPoll=MINUTE + 120,
            ),
            AccountStatus("new-pop", polling=True),
        )
        page = Page(renderStatus(snapshot(accounts=accounts)))
        self.assertIn("support-pop 1 min ago ok", page.text)
        self.assertIn(
            "sales-pop 30 s ago cannot log in: -ERR bad password "
            "2023-11-14 22:16:00 UTC 2 4 0",
            page.text,
        )
        self.assertIn("new-pop polling now", page.text)

    def test_contacts(self) -> None:
        """
        The contacts are counted by state, or the page says the store did
        not answer.
        """
        self.assertIn("open 7 ended 2 expired 1", Page(renderStatus(snapshot())).text)
        page = Page(renderStatus(snapshot(contacts=None)))
        self.assertIn("The contact store did not answer.", page.text)

    def test_healthDown(self) -> None:
        """
        A failed check is listed with what is wrong.
        """
        checks = (
            Check("API listener", None),
            Check("SMTP proxy listener", "not listening"),
        )
        page = Page(renderStatus(snapshot(checks=checks)))
        self.assertIn("Down: SMTP proxy listener: not listening", page.text)

    def test_hostileTextEscaped(self) -> None:
        """
        Account errors, server replies, names and the host name are shown
        as the text they are: no element, attribute or entity of theirs
        gets into the page.
        """
        accounts = (AccountStatus(HOSTILE, lastPoll=MINUTE, lastResult=HOSTILE),)
        queue = (
            QueueStateView(
                "deferred", 1, entry("q1", "deferred", HOSTILE, MINUTE, HOSTILE)
            ),
        )
        server = ServerView(HOSTILE, HOSTILE, True, None, 0, 0, 0, 0)
        page = Page(
            renderStatus(
                snapshot(
                    hostname=HOSTILE,
                    accounts=accounts,
                    queue=queue,
                    routes=(RouteView(HOSTILE, (server,)),),
                    checks=(Check(HOSTILE, HOSTILE),),
                    contacts=((HOSTILE, 1),),
                )
            )
        )
        self.assertEqual(page.named("script") + page.named("img"), [])
        self.assertFalse(any("onerror" in attrs for _, attrs in page.tags))
        self.assertGreaterEqual(page.text.count(HOSTILE), 10)

    def test_noScriptNoOutsideResources(self) -> None:
        """
        The page has no script and loads nothing: no element names another
        address, and the only style is inline.
        """
        page = Page(renderStatus(snapshot()))
        self.assertEqual(page.named("script") + page.named("link"), [])
        for _, attrs in page.tags:
            self.assertNotIn("src", attrs)
            self.assertFalse((attrs.get("href") or "").startswith("http"))

    def test_login(self) -> None:
        """
        The sign-in form posts the token to C{/status}, says where the token
        is, and shows a problem escaped.
        """
        page = Page(renderLogin(HOSTILE, "/srv/<ace>/api-token"))
        [form] = page.named("form")
        self.assertEqual((form["method"], form["action"]), ("post", "/status"))
        [field] = page.named("input")
        self.assertEqual((field["name"], field["type"]), ("token", "password"))
        self.assertIn(HOSTILE, page.text)
        self.assertIn("/srv/<ace>/api-token", page.text)
        self.assertEqual(page.named("script") + page.named("img"), [])


def bars(page: bytes) -> list[tuple[str, float]]:
    """
    @return: Each bar of the chart: its title and its height.
    """
    found = re.findall(
        rb'<rect class="bar" x="[0-9.]+" y="[0-9.]+" width="[0-9.]+" '
        rb'height="([0-9.]+)"><title>([^<]*)</title></rect>',
        page,
    )
    return [(title.decode(), float(height)) for height, title in found]


class ChartTests(PagesMixin, SynchronousTestCase):
    """
    The chart of deliveries per minute, fed by the delivery hook on the
    reactor's clock, as the status page draws it.
    """

    def page(self) -> bytes:
        status, _, body = self.get("/status", {"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual(status, 200)
        return body

    def test_bucketsFollowTheClock(self) -> None:
        """
        Each minute of the last hour is one bar, oldest first, titled with
        its minute and count; the busiest minute is full height; a minute
        more than an hour old is gone.
        """
        self.metrics.attempted(
            "outgoing", "outgoing/1 smtp1.example:25", {"delivered": 4}, 1.0
        )
        self.clock.advance(150)
        self.metrics.attempted(
            "outgoing", "outgoing/2 smtp2.example:587", {"delivered": 2}, 1.0
        )
        self.metrics.attempted(
            "outgoing", "outgoing/2 smtp2.example:587", {"deferred": 5}, 1.0
        )
        drawn = bars(self.page())
        self.assertEqual(len(drawn), 60)
        self.assertEqual(drawn[-1], ("22:16 UTC: 2 delivered", 73.0))
        self.assertEqual(drawn[-2], ("22:15 UTC: 0 delivered", 0.0))
        self.assertEqual(drawn[-3], ("22:14 UTC: 4 delivered", 146.0))
        self.assertIn(b'<span id="delivered-hour">6</span>', self.page())

        self.clock.advance(57 * 60)
        self.assertEqual(bars(self.page())[0], ("22:14 UTC: 4 delivered", 146.0))
        self.clock.advance(60)
        drawn = bars(self.page())
        self.assertEqual(drawn[0], ("22:15 UTC: 0 delivered", 0.0))
        self.assertEqual(drawn[1], ("22:16 UTC: 2 delivered", 146.0))

    def test_snapshotFromParts(self) -> None:
        """
        The page shows the configured servers with the sender's health and
        the delivery counts, the queue's oldest message per state and the
        accounts' status.
        """
        self.sender.statuses.append(
            ServerStatus(
                "outgoing/2", "outgoing/2 smtp2.example:587", False, MINUTE + 30, 0, 0
            )
        )
        self.metrics.attempted(
            "outgoing", "outgoing/1 smtp1.example:25", {"delivered": 3}, 1.0
        )
        self.queue.entries += [
            entry("q2", "deferred", "outgoing", MINUTE - 60, "421 4.7.0 busy"),
            entry("q1", "deferred", "outgoing", MINUTE - 600, "451 4.3.0 later"),
        ]
        self.accounts.append(
            AccountStatus("support-pop", lastResult=HOSTILE, lastPoll=MINUTE)
        )
        page = Page(self.page())
        self.assertIn("outgoing outgoing/1 smtp1.example:25 healthy 0 3 0 0", page.text)
        self.assertIn("outgoing/2 smtp2.example:587 set aside until", page.text)
        self.assertIn("deferred 2 q1 10 min", page.text)
        self.assertIn(f"support-pop 0 s ago {HOSTILE}", page.text)
        self.assertIn("open 3 ended 2 expired 1", page.text)
        self.assertEqual(page.named("script"), [])
