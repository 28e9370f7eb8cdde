"""
Tests for L{ace_mail._time}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ace_mail._time import utcText


class UtcTextTests(SynchronousTestCase):
    """
    L{utcText} writes a POSIX time as RFC 3339 in UTC.
    """

    def test_toTheSecond(self) -> None:
        """
        The time is in UTC with C{Z}, and fractions of a second are cut.
        """
        self.assertEqual(utcText(1796407577.9), "2026-12-04T18:06:17Z")
        self.assertEqual(utcText(0), "1970-01-01T00:00:00Z")

    def test_outOfRange(self) -> None:
        """
        A time past the year 9999 is given in seconds instead of failing.
        """
        self.assertEqual(utcText(1e12), "1000000000000 seconds after 1970")
