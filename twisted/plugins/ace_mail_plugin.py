"""
Makes C{twistd ace-mail} available; the work is in L{ace_mail.tap}.
"""

from twisted.application.service import ServiceMaker

aceMail = ServiceMaker(
    "ace-mail",
    "ace_mail.tap",
    "The ACE contact centre's mail server: outgoing queue, SMTP proxy, POP3.",
    "ace-mail",
)
