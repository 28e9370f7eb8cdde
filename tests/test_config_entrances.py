"""
Tests for the config file's C{[[entrance]]} tables (L{ace_mail._entrances}).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ace_mail.config import ConfigError, load

GOOD = """\
autoAnswerLimit = 5

[[entrance]]
name = "acme"
address = "Acme Support <support@acme.example>"
agentMailbox = "agents@acme.example"
autoAnswerText = "Dear {customerName}, your case is {contactId}."

  [[entrance.smtp]]
  host = "smtp.acme.example"
  port = 587
  tls = "required"
  username = "ace"
  password = "pw"

  [[entrance.account]]
  name = "acme-pop"
  host = "pop.acme.example"
  username = "support"
  password = "secret"
  pollInterval = "2m"

[[entrance]]
name = "globex"
address = "help@globex.example"

  [[entrance.account]]
  name = "globex-pop"
  host = "127.0.0.1"
  port = 10110
  tls = "none"
  allowPlaintext = true
  username = "help"
  password = "secret"
  keepOnServer = true
"""


class EntranceTests(SynchronousTestCase):
    """
    Entrances, their servers and their accounts.
    """

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def assertRefused(self, text: str, *fragments: str) -> None:
        with self.assertRaises(ConfigError) as caught:
            load({}, self.write(text))
        message = str(caught.exception)
        for fragment in fragments:
            self.assertIn(fragment, message)
        self.assertNotIn("\n", message)

    def test_read(self) -> None:
        """
        Entrances come out with their servers, accounts and defaults.
        """
        settings = load({}, self.write(GOOD))
        acme, globex = settings.entrances
        self.assertEqual((acme.name, acme.address), ("acme", "support@acme.example"))
        self.assertEqual(acme.displayName, "Acme Support")
        self.assertEqual(acme.routeName, "entrance/acme")
        self.assertEqual(acme.servers[0].port, 587)
        self.assertEqual(acme.servers[0].password, "pw")
        [account] = acme.accounts
        self.assertEqual((account.tls, account.port), ("implicit", 995))
        self.assertEqual(account.pollInterval, 120.0)
        self.assertEqual(account.entrance, "acme")
        self.assertTrue(account.verifyCertificate)
        self.assertEqual(globex.routeName, "outgoing")
        self.assertIsNone(globex.autoAnswerText)
        self.assertTrue(globex.accounts[0].keepOnServer)
        self.assertEqual(globex.accounts[0].port, 10110)
        self.assertEqual(settings["autoAnswerLimit"], 5)

    def test_defaultEntranceJoins(self) -> None:
        """
        --entranceAddress adds the entrance C{default} before the file's.
        """
        settings = load(
            {"entranceAddress": "Support <s@example.com>"}, self.write(GOOD)
        )
        self.assertEqual(
            [e.name for e in settings.entrances], ["default", "acme", "globex"]
        )

    def test_defaultTwice(self) -> None:
        """
        The entrance C{default} may be given in one place only.
        """
        path = self.write('[[entrance]]\nname = "default"\naddress = "a@b.example"\n')
        with self.assertRaises(ConfigError) as caught:
            load({"entranceAddress": "s@example.com"}, path)
        self.assertIn("--entranceAddress", str(caught.exception))

    def test_plaintextNeedsConsent(self) -> None:
        """
        Plain POP3 is refused unless allowPlaintext says so, naming the line.
        """
        text = GOOD.replace("allowPlaintext = true\n", "")
        self.assertRefused(text, ", line 31:", "entrance.account.tls", "allowPlaintext")

    def test_unknownKeyInSecondAccount(self) -> None:
        """
        An unknown key is named with its own line, in the right table.
        """
        text = GOOD.replace("keepOnServer = true", "keepOnSrver = true")
        self.assertRefused(
            text, ", line 35:", "entrance.account.keepOnSrver", "unknown key"
        )

    def test_badPort(self) -> None:
        """
        A bad port in a server table is named with its line.
        """
        self.assertRefused(
            GOOD.replace("port = 587", "port = 0"), ", line 11:", "entrance.smtp.port"
        )

    def test_missingPassword(self) -> None:
        """
        An account without a password is refused.
        """
        text = GOOD.replace('  password = "secret"\n  pollInterval', "  pollInterval")
        self.assertRefused(text, "entrance.account.password", "missing")

    def test_unknownPlaceholder(self) -> None:
        """
        A placeholder the template does not know is refused.
        """
        text = GOOD.replace("{contactId}.", "{caseNumber}.")
        self.assertRefused(text, ", line 7:", "entrance.autoAnswerText", "{contactId}")

    def test_duplicateNames(self) -> None:
        """
        Two entrances or two accounts of one name are refused.
        """
        self.assertRefused(
            GOOD.replace('name = "globex"', 'name = "acme"'), "second entrance"
        )
        self.assertRefused(
            GOOD.replace('"globex-pop"', '"acme-pop"'), "second account", ", line 28:"
        )

    def test_badAddress(self) -> None:
        """
        An entrance address that is not an address is refused.
        """
        self.assertRefused(
            GOOD.replace('"help@globex.example"', '"help"'),
            "entrance.address",
            ", line 25:",
        )
