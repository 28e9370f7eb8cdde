# -*- test-case-name: tests.test_time -*-
"""
Moments as text for logs and answers.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utcText(seconds: float) -> str:
    """
    @return: The POSIX time C{seconds} as RFC 3339 text in UTC, to the
        second, such as C{"2026-12-04T18:06:17Z"}; a time outside the
        years 1 to 9999 as its number of seconds.
    """
    try:
        moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, ValueError, OSError):
        return f"{seconds:.0f} seconds after 1970"
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
