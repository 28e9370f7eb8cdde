# -*- test-case-name: tests.reliability.test_crash,tests.reliability.test_soak -*-
"""
The reckoning of the reliability suite: what a sink stored, measured
against what ace-mail acknowledged, with the duplicates that kills explain.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from itertools import pairwise

from attrs import frozen

from tests.e2e._harness import Sink
from tests.reliability._load import Tally

_TOKEN = re.compile(rb"reliability-id=([0-9a-z-]+);")


@frozen
class Copy:
    """
    One copy of a test message that the sink stored.

    @ivar stored: When the sink stored it (the file's mtime).
    @ivar digest: The SHA-256 of the whole copy.
    @ivar recipients: Its RCPT TO addresses.
    @ivar whole: Whether its body matches its digest line.
    """

    stored: float
    digest: str
    recipients: tuple[str, ...]
    whole: bool


def _whole(content: bytes) -> bool:
    body = content.partition(b"\r\n\r\n")[2].rstrip(b"\r\n").split(b"\r\n")
    digest = hashlib.sha256(b"\r\n".join(body[:-1])).hexdigest()
    return body[-1] == f"digest {digest}".encode("ascii")


def storedCopies(sink: Sink) -> dict[str, list[Copy]]:
    """
    Each test id at the sink, with its copies, oldest first. Messages that
    carry no test id (such as automatic answers) are left out.
    """
    copies: dict[str, list[Copy]] = {}
    for path in sink.files():
        with open(path, "rb") as f:
            content = f.read()
        found = _TOKEN.search(content)
        if found is None:
            continue
        name = os.path.basename(path) + ".json"
        with open(os.path.join(sink.directory, "envelope", name)) as f:
            recipients = tuple(json.load(f)["recipients"])
        copy = Copy(
            os.stat(path).st_mtime,
            hashlib.sha256(content).hexdigest(),
            recipients,
            _whole(content),
        )
        copies.setdefault(found.group(1).decode("ascii"), []).append(copy)
    return {t: sorted(found, key=lambda c: c.stored) for t, found in copies.items()}


def inFlight(
    copies: list[tuple[float, str]], kills: list[float], window: float = 2.0
) -> bool:
    """
    Whether the extra copies of one message are explained by kills: all
    copies byte-identical, and between each copy and the next a kill within
    C{window} seconds of the earlier copy (ace-mail died before it read the
    sink's 250, and sent the message again once started).

    @param copies: When each copy was stored and its digest, oldest first.
    """
    return len({digest for _, digest in copies}) == 1 and all(
        any(abs(earlier - k) <= window and later > k for k in kills)
        for (earlier, _), (later, _) in pairwise(copies)
    )


@frozen
class Reckoning:
    """
    What the sink holds, measured against what ace-mail acknowledged.

    @ivar lost: Acknowledged test ids that no copy at the sink carries.
    @ivar duplicated: Test ids stored more than once.
    @ivar inFlight: Those of C{duplicated} that L{inFlight} explains.
    @ivar damaged: Test ids with a copy that does not match its digest.
    @ivar misrouted: Acknowledged test ids with a copy for someone else.
    @ivar unknown: Test ids at the sink that the load never sent.
    @ivar unanswered: Test ids at the sink that were sent but never
        acknowledged (ace-mail died before its answer reached the client).
    """

    lost: list[str]
    duplicated: list[str]
    inFlight: list[str]
    damaged: list[str]
    misrouted: list[str]
    unknown: list[str]
    unanswered: list[str]

    def problems(self) -> str:
        """
        A sentence naming what went wrong, or C{""}.
        """
        notInFlight = sorted(set(self.duplicated) - set(self.inFlight))
        found = [
            f"{len(ids)} {what}: {sorted(ids)[:10]}"
            for what, ids in [
                ("lost", self.lost),
                ("duplicated while not in flight", notInFlight),
                ("damaged", self.damaged),
                ("misrouted", self.misrouted),
                ("never sent", self.unknown),
            ]
            if ids
        ]
        return "; ".join(found)


def reckon(tally: Tally, sink: Sink, kills: list[float]) -> Reckoning:
    """
    Compare what C{tally} says ace-mail acknowledged with what C{sink}
    stored, with the times of the kills for the duplicates.
    """
    copies = storedCopies(sink)
    expected = dict(tally.expected)
    duplicated = [t for t, found in copies.items() if len(found) > 1]
    return Reckoning(
        lost=sorted(set(expected) - set(copies)),
        duplicated=duplicated,
        inFlight=[
            t
            for t in duplicated
            if inFlight([(c.stored, c.digest) for c in copies[t]], kills)
        ],
        damaged=[t for t, found in copies.items() if not all(c.whole for c in found)],
        misrouted=[
            t
            for t, found in copies.items()
            if t in expected and any(c.recipients != (expected[t],) for c in found)
        ],
        unknown=sorted(set(copies) - tally.sent),
        unanswered=sorted(set(copies) & tally.sent - set(expected)),
    )
