# -*- test-case-name: tests.test_accounts_poller -*-
"""
POP3 accounts: a service per account that polls its mailbox and hands each
new message to intake, deleting it from the server only once it is safe;
with several nodes on one store, only the node that holds the account's
lease polls it.
"""

from ._poller import MAX_BACKOFF, AccountPoller, pollerServices
from ._protocol import POP3Error
from ._status import AccountStatus

__all__ = [
    "MAX_BACKOFF",
    "AccountPoller",
    "AccountStatus",
    "POP3Error",
    "pollerServices",
]
