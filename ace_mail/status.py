# -*- test-case-name: tests.test_status -*-
"""
The operators' status page as HTML, written from a snapshot of ace-mail: no
I/O, no clock and no script, and every piece of text escaped.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Iterable, Sequence

from attrs import frozen

from ace_mail.accounts import AccountStatus
from ace_mail.queue import QueueEntry

REFRESH_SECONDS = 30
"""
How often the browser reloads the status page.
"""

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2329; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: .25em .8em .25em 0; vertical-align: top; }
th { border-bottom: 1px solid #9aa4ad; }
td.n, th.n { text-align: right; }
.ok { color: #1b6e2e; }
.bad { color: #a3161b; font-weight: 600; }
.muted { color: #5c6770; }
.error { font-family: ui-monospace, monospace; white-space: pre-wrap; }
svg .bar { fill: #2f6fb3; }
svg .axis { stroke: #9aa4ad; }
svg text { font-size: 11px; fill: #5c6770; }
"""
"""
The page's only style sheet, inline, so that the page loads nothing else.
"""


@frozen
class ServerView:
    """
    One server of a route, as the status page shows it.

    @ivar name: Its name, such as C{"outgoing/1"}.
    @ivar address: Its host and port.
    @ivar healthy: C{False} while it is set aside after a failure.
    @ivar setAsideUntil: When it stops being set aside (POSIX seconds).
    @ivar connections: Its open connections.
    @ivar delivered: Recipients delivered through it since ace-mail started.
    @ivar deferred: Recipients it deferred since ace-mail started.
    @ivar failed: Recipients it refused for good since ace-mail started.
    """

    name: str
    address: str
    healthy: bool
    setAsideUntil: float | None
    connections: int
    delivered: int
    deferred: int
    failed: int


@frozen
class RouteView:
    """
    One route and its servers.
    """

    name: str
    servers: tuple[ServerView, ...]


@frozen
class QueueStateView:
    """
    The messages of the queue in one state.

    @ivar state: C{"queued"}, C{"active"} or C{"deferred"}.
    @ivar count: How many messages are in it.
    @ivar oldest: The one accepted first, or L{None} when there is none.
    """

    state: str
    count: int
    oldest: QueueEntry | None


@frozen
class Check:
    """
    One health check: its name, and L{None} or the sentence saying what is
    wrong.
    """

    name: str
    problem: str | None


@frozen
class Snapshot:
    """
    Everything the status page shows, taken at one moment.

    @ivar now: That moment, in POSIX seconds.
    @ivar hostname: The server's name.
    @ivar version: ace-mail's version.
    @ivar checks: The health checks.
    @ivar routes: Every route and its servers.
    @ivar queue: The queue by state.
    @ivar accounts: Each POP3 account's status.
    @ivar contacts: The contact counts by state, or L{None} when the store
        did not answer.
    @ivar perMinute: The start of each of the last minutes, oldest first,
        with the recipients delivered in it.
    @ivar node: This node's name among the nodes that share a store.
    """

    now: float
    hostname: str
    version: str
    checks: tuple[Check, ...]
    routes: tuple[RouteView, ...]
    queue: tuple[QueueStateView, ...]
    accounts: tuple[AccountStatus, ...]
    contacts: tuple[tuple[str, int], ...] | None
    perMinute: tuple[tuple[float, int], ...]
    node: str = ""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def utc(seconds: float, withDate: bool = True) -> str:
    """
    @return: A POSIX time as UTC text, such as C{"2026-01-31 14:05:09 UTC"}.
    """
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if withDate else "%H:%M UTC")


def span(seconds: float) -> str:
    """
    @return: A length of time in the largest unit that fits, such as
        C{"42 s"}, C{"7 min"}, C{"3.5 h"} or C{"2.1 d"}.
    """
    seconds = abs(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _cell(text: object, kind: str = "", markup: str | None = None) -> str:
    """
    @return: One table cell holding C{text} escaped (or C{markup} as it
        is), of class C{kind} if given.
    """
    attribute = f' class="{kind}"' if kind else ""
    return f"<td{attribute}>{_e(text) if markup is None else markup}</td>"


def _table(head: Sequence[str], rows: Iterable[str], numeric: range) -> str:
    """
    @return: A table whose columns in C{numeric} are right-aligned.
    """
    cells = "".join(
        f'<th class="n">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>"
        for i, h in enumerate(head)
    )
    body = "".join(f"<tr>{row}</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _health(checks: Sequence[Check]) -> str:
    down = [check for check in checks if check.problem is not None]
    if not down:
        names = ", ".join(check.name for check in checks)
        return f'<p id="health" class="ok">Up: {_e(names)}.</p>'
    items = "".join(f"<li>{_e(check.name)}: {_e(check.problem)}</li>" for check in down)
    return f'<div id="health" class="bad"><p>Down:</p><ul>{items}</ul></div>'


def _serverState(server: ServerView, now: float) -> tuple[str, str]:
    if server.healthy or server.setAsideUntil is None:
        return "healthy", "ok"
    until = server.setAsideUntil
    return f"set aside until {utc(until)} ({span(until - now)} more)", "bad"


def _routes(snapshot: Snapshot) -> str:
    rows = []
    totals = [0, 0, 0]
    for route in snapshot.routes:
        for server in route.servers:
            state, kind = _serverState(server, snapshot.now)
            figures = (server.delivered, server.deferred, server.failed)
            totals = [a + b for a, b in zip(totals, figures, strict=True)]
            rows.append(
                _cell(route.name)
                + _cell(server.name)
                + _cell(server.address)
                + _cell(state, kind)
                + _cell(server.connections, "n")
                + "".join(_cell(figure, "n") for figure in figures)
            )
    rows.append(
        _cell("", markup="<strong>all routes</strong>")
        + _cell("")
        + _cell("")
        + _cell("")
        + _cell("")
        + f'<td class="n" id="delivered-total">{totals[0]}</td>'
        + _cell(totals[1], "n")
        + _cell(totals[2], "n")
    )
    head = (
        *("Route", "Server", "Address", "State", "Connections"),
        *("Delivered", "Deferred", "Failed"),
    )
    note = (
        '<p class="muted">Recipients since ace-mail started; a server is set '
        "aside, and tried last, for a while after it fails.</p>"
    )
    return _table(head, rows, range(4, 8)) + note


def _queue(snapshot: Snapshot) -> str:
    rows = []
    for view in snapshot.queue:
        oldest = view.oldest
        if oldest is None:
            rows.append(_cell(view.state) + _cell(view.count, "n") + _cell("") * 4)
            continue
        age = f"{span(snapshot.now - oldest.created)} ({utc(oldest.created)})"
        rows.append(
            _cell(view.state)
            + _cell(view.count, "n")
            + _cell(oldest.queueId)
            + _cell(age)
            + _cell(oldest.route)
            + _cell(oldest.lastError, "error")
        )
    total = sum(view.count for view in snapshot.queue)
    head = ("State", "Messages", "Oldest", "Waiting", "Route", "Its last error")
    summary = f'<p><span id="queue-total">{total}</span> messages in the queue.</p>'
    return summary + _table(head, rows, range(1, 2))


def _accounts(snapshot: Snapshot) -> str:
    if not snapshot.accounts:
        return '<p class="muted">No POP3 accounts are configured.</p>'
    rows = []
    shared = any(account.lease is not None for account in snapshot.accounts)
    for account in snapshot.accounts:
        if account.lastPoll is None:
            lastPoll = "polling now" if account.polling else "not yet"
        else:
            lastPoll = f"{span(snapshot.now - account.lastPoll)} ago"
        if account.lastResult is None:
            result, kind = "", ""
        elif account.lastResult == "ok":
            result, kind = "ok", "ok"
        else:
            result, kind = account.lastResult, "bad error"
        nextPoll = "" if account.nextPoll is None else utc(account.nextPoll)
        row = (
            _cell(account.account)
            + _cell(lastPoll)
            + _cell(result, kind)
            + _cell(nextPoll)
            + _cell(account.consecutiveFailures, "n")
            + _cell(account.errors, "n")
            + _cell(account.messagesTaken, "n")
        )
        if shared:
            row += _cell(account.lease or "")
        rows.append(row)
    head = (
        *("Account", "Last poll", "Last result", "Next poll"),
        *("Failures in a row", "Failed polls", "Messages taken"),
        *(("Lease",) if shared else ()),
    )
    return _table(head, rows, range(4, 7))


def _contacts(snapshot: Snapshot) -> str:
    if snapshot.contacts is None:
        return '<p class="bad">The contact store did not answer.</p>'
    rows = [_cell(state) + _cell(count, "n") for state, count in snapshot.contacts]
    note = (
        '<p class="muted">An ended contact can be answered until the retention '
        "runs out; then it is expired until the hourly purge.</p>"
    )
    return _table(("State", "Contacts"), rows, range(1, 2)) + note


def chart(perMinute: Sequence[tuple[float, int]]) -> str:
    """
    @return: An SVG bar chart of the deliveries in each minute, with the
        busiest minute's count at the top of the scale.
    """
    width, height, left, bottom, top = 720, 180, 44, 24, 10
    plotWidth, plotHeight = width - left - 8, height - top - bottom
    slot = plotWidth / max(len(perMinute), 1)
    peak = max((count for _, count in perMinute), default=0)
    scale = max(peak, 1)
    parts = [
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Recipients delivered per minute over the last hour">',
        f'<line class="axis" x1="{left}" y1="{top + plotHeight}" '
        f'x2="{width - 8}" y2="{top + plotHeight}"/>',
        f'<text x="{left - 6}" y="{top + 9}" text-anchor="end">{scale}</text>',
        f'<text x="{left - 6}" y="{top + plotHeight}" text-anchor="end">0</text>',
    ]
    for index, (start, count) in enumerate(perMinute):
        barHeight = plotHeight * count / scale
        x = left + index * slot + 1
        y = top + plotHeight - barHeight
        label = f"{utc(start, withDate=False)}: {count} delivered"
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot - 2:.1f}" '
            f'height="{barHeight:.1f}"><title>{_e(label)}</title></rect>'
        )
        if index % 15 == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{height - 6}" '
                f'text-anchor="start">{_e(utc(start, withDate=False))}</text>'
            )
    parts.append(f'<text x="{width - 8}" y="{height - 6}" text-anchor="end">now</text>')
    parts.append("</svg>")
    return "".join(parts)


def _deliveries(snapshot: Snapshot) -> str:
    counts = [count for _, count in snapshot.perMinute]
    hour = sum(counts)
    peak = max(counts, default=0)
    return (
        chart(snapshot.perMinute)
        + f'<p><span id="delivered-hour">{hour}</span> recipients delivered in '
        f"the last {len(counts)} minutes; the busiest minute had {peak}.</p>"
    )


def _page(title: str, body: str, refresh: bool) -> bytes:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{_e(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    ).encode("utf-8")


def renderStatus(snapshot: Snapshot) -> bytes:
    """
    @return: The status page for C{snapshot}, as UTF-8 HTML.
    """
    sections = (
        ("deliveries", "Deliveries per minute, last hour", _deliveries),
        ("routes", "Routes and servers", _routes),
        ("queue", "Queue", _queue),
        ("accounts", "POP3 accounts", _accounts),
        ("contacts", "Contacts", _contacts),
    )
    body = [
        f"<h1>ace-mail on {_e(snapshot.hostname)}</h1>",
        f'<p class="muted">Node {_e(snapshot.node)}, version'
        f" {_e(snapshot.version)}, as of {_e(utc(snapshot.now))}; this page"
        f" reloads every {REFRESH_SECONDS} s.</p>",
        _health(snapshot.checks),
    ]
    for anchor, title, render in sections:
        body.append(
            f'<section id="{anchor}"><h2>{_e(title)}</h2>{render(snapshot)}</section>'
        )
    return _page(f"ace-mail status: {snapshot.hostname}", "".join(body), True)


def renderLogin(problem: str | None, tokenPath: str) -> bytes:
    """
    @return: The form that asks for the API token before the status page,
        with C{problem} (such as a wrong token) above it.

    @param tokenPath: Where the operator finds the token.
    """
    warning = "" if problem is None else f'<p class="bad">{_e(problem)}</p>'
    body = (
        "<h1>ace-mail status</h1>"
        f"{warning}<p>Give the API token (it is in {_e(tokenPath)}, unless the "
        "configuration sets apiToken) to see the status page. It is kept in a "
        "cookie that only this page accepts, until the browser closes.</p>"
        '<form method="post" action="/status"><label>API token '
        '<input type="password" name="token" autocomplete="off" required>'
        '</label> <button type="submit">Show the status</button></form>'
    )
    return _page("ace-mail status: sign in", body, False)
