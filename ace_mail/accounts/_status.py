# -*- test-case-name: tests.test_accounts_schedule -*-
"""
What an operator sees of one POP3 account.
"""

from __future__ import annotations

from attrs import frozen


@frozen
class AccountStatus:
    """
    The state of one account's polling.

    @ivar account: The account's name.
    @ivar polling: C{True} while a poll runs.
    @ivar lastPoll: When the last poll ended (POSIX seconds), or L{None}.
    @ivar lastResult: C{"ok"}, or the sentence that says why the last poll
        failed; L{None} before the first.
    @ivar messagesTaken: How many messages intake took, over every poll.
    @ivar messagesTooLarge: How many times a message was left on the
        server because it was larger than the account's maxMessageSize.
    @ivar errors: How many polls failed.
    @ivar consecutiveFailures: How many polls failed since the last one
        that succeeded.
    @ivar nextPoll: When the next poll is due (POSIX seconds), or L{None}
        while none is scheduled.
    @ivar lease: With several nodes sharing a store, which of them polls the
        account, or why this node does not: C{"held by this node, NAME"},
        C{"held by another node"} or C{"store unreachable: WHY"}; L{None}
        when this node alone polls every account.
    """

    account: str
    polling: bool = False
    lastPoll: float | None = None
    lastResult: str | None = None
    messagesTaken: int = 0
    messagesTooLarge: int = 0
    errors: int = 0
    consecutiveFailures: int = 0
    nextPoll: float | None = None
    lease: str | None = None
