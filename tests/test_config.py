"""
Tests for L{ace_mail.config}: every way a setting can be wrong gets one
sentence that names the option or the file and line.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from ace_mail._parameters import maskPassword
from ace_mail.config import ConfigError, load


class CommandLineTests(SynchronousTestCase):
    """
    Settings given as command-line options.
    """

    def assertRefused(self, options: dict[str, str], *fragments: str) -> str:
        with self.assertRaises(ConfigError) as caught:
            load(options)
        message = str(caught.exception)
        for fragment in fragments:
            self.assertIn(fragment, message)
        self.assertNotIn("\n", message)
        return message

    def test_defaults(self) -> None:
        """
        With nothing given, ace-mail relays through localhost:25 with
        Postfix's retry schedule and keeps its data in ./ace-mail-data.
        """
        settings = load({})
        self.assertEqual(settings["outgoingMailSmtpServer1"], "localhost")
        self.assertEqual(settings["outgoingMailSmtpPort1"], 25)
        self.assertIsNone(settings["outgoingMailSmtpServer2"])
        self.assertEqual(settings["minimalBackoffTime"], 300.0)
        self.assertEqual(settings["maximalBackoffTime"], 4000.0)
        self.assertEqual(settings["maximalQueueLifetime"], 5 * 86400.0)
        self.assertEqual(settings["dataDir"], "ace-mail-data")
        self.assertEqual(settings["api"], "tcp:8025:interface=127.0.0.1")
        self.assertFalse(settings["enableSmtpProxy"])

    def test_portZero(self) -> None:
        """
        Port 0 is refused, naming the option and the range.
        """
        self.assertRefused(
            {"outgoingMailSmtpPort1": "0"},
            "--outgoingMailSmtpPort1",
            "a port number from 1 to 65535",
            "'0'",
        )

    def test_portTooLarge(self) -> None:
        """
        Port 70000 is refused.
        """
        self.assertRefused(
            {"smtpProxySmtpPort": "70000"}, "--smtpProxySmtpPort", "70000"
        )

    def test_portNotANumber(self) -> None:
        """
        A port that is not a number is refused.
        """
        self.assertRefused({"outgoingMailSmtpPort2": "smtp"}, "--outgoingMailSmtpPort2")

    def test_emptyHost(self) -> None:
        """
        An empty host name is refused.
        """
        self.assertRefused(
            {"outgoingMailSmtpServer1": ""},
            "--outgoingMailSmtpServer1",
            "a host name or an IP address",
        )

    def test_hostWithSpaces(self) -> None:
        """
        A host name with a space in it is refused.
        """
        self.assertRefused(
            {"smtpProxySmtpServer": "mail server"}, "--smtpProxySmtpServer"
        )

    def test_hostsAccepted(self) -> None:
        """
        Names, IPv4 and IPv6 addresses are all accepted as hosts.
        """
        for value in ("smtp.example.com", "127.0.0.1", "::1", "[::1]", "mail-2"):
            settings = load({"outgoingMailSmtpServer1": value})
            self.assertEqual(settings["outgoingMailSmtpServer1"], value.strip("[]"))

    def test_enableSmtpProxy(self) -> None:
        """
        enableSmtpProxy takes ACE's 1 and 0 and nothing else.
        """
        proxy = {
            "smtpProxyRerouteName": "ace.example.com",
            "smtpProxySmtpServer": "smtp.example.com",
            "entranceAddress": "support@example.com",
        }
        self.assertTrue(load({"enableSmtpProxy": "1", **proxy})["enableSmtpProxy"])
        self.assertFalse(load({"enableSmtpProxy": "0"})["enableSmtpProxy"])
        self.assertRefused({"enableSmtpProxy": "2"}, "--enableSmtpProxy", "1 or 0")

    def test_smtpProxyPort(self) -> None:
        """
        smtpProxyPort takes a port number or an endpoint string.
        """
        self.assertEqual(load({"smtpProxyPort": "2525"})["smtpProxyPort"], "tcp:2525")
        endpoint = "tcp:2525:interface=127.0.0.1"
        self.assertEqual(load({"smtpProxyPort": endpoint})["smtpProxyPort"], endpoint)
        self.assertRefused({"smtpProxyPort": "0"}, "--smtpProxyPort")
        self.assertRefused({"smtpProxyPort": "bogus"}, "--smtpProxyPort")

    def test_durations(self) -> None:
        """
        Times take seconds or a unit; zero and nonsense are refused.
        """
        self.assertEqual(load({"minimalBackoffTime": "90"})["minimalBackoffTime"], 90.0)
        self.assertEqual(
            load({"minimalBackoffTime": "5m"})["minimalBackoffTime"], 300.0
        )
        self.assertEqual(
            load({"maximalQueueLifetime": "5d"})["maximalQueueLifetime"], 432000.0
        )
        self.assertEqual(load({"smtpConnectTimeout": "0.5"})["smtpConnectTimeout"], 0.5)
        self.assertRefused({"smtpConnectTimeout": "0"}, "--smtpConnectTimeout")
        self.assertRefused({"maximalQueueLifetime": "soon"}, "--maximalQueueLifetime")

    def test_backoffOrder(self) -> None:
        """
        The maximal backoff may not be shorter than the minimal one.
        """
        self.assertRefused(
            {"minimalBackoffTime": "10m", "maximalBackoffTime": "1m"},
            "--maximalBackoffTime",
            "600",
        )

    def test_port2WithoutServer2(self) -> None:
        """
        A port for server 2 without server 2 is refused.
        """
        self.assertRefused({"outgoingMailSmtpPort2": "25"}, "--outgoingMailSmtpServer2")

    def test_counts(self) -> None:
        """
        Counts must be whole numbers of at least one.
        """
        self.assertRefused(
            {"smtpConnectionsPerServer": "0"}, "--smtpConnectionsPerServer"
        )
        self.assertRefused({"deliveryConcurrency": "-3"}, "--deliveryConcurrency")

    def test_tlsMode(self) -> None:
        """
        The TLS mode is one of four words.
        """
        self.assertEqual(
            load({"outgoingMailSmtpTls": "required"})["outgoingMailSmtpTls"], "required"
        )
        self.assertRefused({"outgoingMailSmtpTls": "yes"}, "--outgoingMailSmtpTls")

    def test_apiEndpoint(self) -> None:
        """
        The API takes an endpoint string.
        """
        self.assertEqual(load({"api": "8026"})["api"], "tcp:8026")
        self.assertRefused({"api": "http://localhost"}, "--api")


class ConfigFileTests(SynchronousTestCase):
    """
    Settings given in a TOML file.
    """

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def assertRefused(self, text: str, *fragments: str) -> str:
        path = self.write(text)
        with self.assertRaises(ConfigError) as caught:
            load({}, path)
        message = str(caught.exception)
        self.assertTrue(message.startswith(path), message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        self.assertNotIn("\n", message)
        return message

    def test_parameters(self) -> None:
        """
        The file takes the parameters under their own names.
        """
        path = self.write(
            'outgoingMailSmtpServer1 = "smtp1.example.com"\n'
            "outgoingMailSmtpPort1 = 587\n"
            'outgoingMailSmtpServer2 = "smtp2.example.com"\n'
            "outgoingMailSmtpPort2 = 2525\n"
            'maximalQueueLifetime = "2d"\n'
            "enableSmtpProxy = 1\n"
            'smtpProxyRerouteName = "ace.example.com"\n'
            'smtpProxySmtpServer = "smtp.example.com"\n'
            'entranceAddress = "Support <support@example.com>"\n'
        )
        settings = load({}, path)
        self.assertEqual(settings["outgoingMailSmtpServer1"], "smtp1.example.com")
        self.assertEqual(settings["outgoingMailSmtpPort1"], 587)
        self.assertEqual(settings["outgoingMailSmtpPort2"], 2525)
        self.assertEqual(settings["maximalQueueLifetime"], 172800.0)
        self.assertTrue(settings["enableSmtpProxy"])

    def test_commandLineWins(self) -> None:
        """
        A parameter given on the command line overrides the file.
        """
        path = self.write("outgoingMailSmtpPort1 = 587\n")
        settings = load({"outgoingMailSmtpPort1": "25"}, path)
        self.assertEqual(settings["outgoingMailSmtpPort1"], 25)

    def test_unreadable(self) -> None:
        """
        A config file that cannot be read is named, with the reason.
        """
        path = os.path.join(self.mktemp(), "missing.toml")
        with self.assertRaises(ConfigError) as caught:
            load({}, path)
        self.assertIn("--config", str(caught.exception))
        self.assertIn(path, str(caught.exception))
        self.assertIn("No such file", str(caught.exception))

    def test_syntaxError(self) -> None:
        """
        A TOML syntax error names the file and its line.
        """
        self.assertRefused(
            'outgoingMailSmtpServer1 = "a"\noutgoingMailSmtpPort1 = = 2\n',
            ", line 2:",
            "TOML syntax error",
        )

    def test_unknownKey(self) -> None:
        """
        An unknown key is refused with its line, so typos do not pass unseen.
        """
        self.assertRefused(
            "outgoingMailSmtpPort1 = 25\noutgoingMailSmtpPrt2 = 25\n",
            ", line 2:",
            "outgoingMailSmtpPrt2",
            "unknown key",
        )

    def test_badValueNamesLine(self) -> None:
        """
        A bad value names the file, the line, the key and what was expected.
        """
        self.assertRefused(
            "\n\noutgoingMailSmtpPort1 = 70000\n",
            ", line 3:",
            "outgoingMailSmtpPort1",
            "a port number from 1 to 65535",
        )

    def test_emptyHostInFile(self) -> None:
        """
        An empty host in the file is refused with its line.
        """
        self.assertRefused('outgoingMailSmtpServer1 = ""\n', ", line 1:", "a host name")

    def test_apiToken(self) -> None:
        """
        The API token may be given inline or in a file.
        """
        settings = load({}, self.write('apiToken = "s3cret"\n'))
        self.assertEqual(settings.apiToken, "s3cret")
        tokenFile = self.write("from-a-file\n")
        settings = load({}, self.write(f'apiTokenFile = "{tokenFile}"\n'))
        self.assertEqual(settings.apiToken, "from-a-file")

    def test_tokenTwice(self) -> None:
        """
        A token given both inline and as a file is refused.
        """
        self.assertRefused(
            'apiToken = "x"\napiTokenFile = "/etc/token"\n', ", line 2:", "not both"
        )

    def test_credentials(self) -> None:
        """
        Credentials for servers 1 and 2 come from the file only, together.
        """
        path = self.write(
            'outgoingMailSmtpUsername = "ace"\noutgoingMailSmtpPassword = "pw"\n'
        )
        settings = load({}, path)
        self.assertEqual(settings.outgoingMailSmtpUsername, "ace")
        self.assertEqual(settings.outgoingMailSmtpPassword, "pw")
        self.assertRefused('outgoingMailSmtpUsername = "ace"\n', "together")

    def test_dkimMissingKeyFile(self) -> None:
        """
        A DKIM key file that cannot be read is named with its line.
        """
        self.assertRefused(
            '[[dkim]]\ndomain = "example.com"\nselector = "s1"\n'
            'keyFile = "/nonexistent/key.pem"\n',
            ", line 4:",
            "dkim.keyFile",
            "/nonexistent/key.pem",
        )


class ProxySettingsTests(SynchronousTestCase):
    """
    The settings of the SMTP proxy, checked together.
    """

    def test_proxyNeedsItsParameters(self) -> None:
        """
        Turning the proxy on without the reroute name, the real SMTP server
        or the entrance address stops start-up, naming what is missing.
        """
        base = {
            "enableSmtpProxy": "1",
            "smtpProxyRerouteName": "ace.example.com",
            "smtpProxySmtpServer": "smtp.example.com",
            "entranceAddress": "Support <support@example.com>",
        }
        self.assertTrue(load(base)["enableSmtpProxy"])
        for missing in (
            "smtpProxyRerouteName",
            "smtpProxySmtpServer",
            "entranceAddress",
        ):
            options = {k: v for k, v in base.items() if k != missing}
            with self.assertRaises(ConfigError) as caught:
                load(options)
            self.assertIn(f"--{missing}", str(caught.exception))

    def test_badEntranceAddress(self) -> None:
        """
        An entrance address that is not an address is refused.
        """
        with self.assertRaises(ConfigError) as caught:
            load({"entranceAddress": "Support"})
        self.assertIn("--entranceAddress", str(caught.exception))

    def test_retentionHours(self) -> None:
        """
        The retention takes fractions of an hour, and not zero.
        """
        self.assertEqual(
            load({"contactRetentionHours": "0.001"})["contactRetentionHours"], 0.001
        )
        with self.assertRaises(ConfigError):
            load({"contactRetentionHours": "0"})

    def test_trustedNetworks(self) -> None:
        """
        Trusted networks are a comma-separated list of IP networks.
        """
        settings = load({"smtpProxyTrustedNetworks": "10.1.0.0/16, 192.0.2.7"})
        self.assertEqual(
            settings["smtpProxyTrustedNetworks"], ("10.1.0.0/16", "192.0.2.7/32")
        )
        with self.assertRaises(ConfigError) as caught:
            load({"smtpProxyTrustedNetworks": "10.1.0.0/33"})
        self.assertIn("--smtpProxyTrustedNetworks", str(caught.exception))

    def test_certificateAndKeyTogether(self) -> None:
        """
        A certificate without its key is refused.
        """
        with self.assertRaises(ConfigError) as caught:
            load({"smtpProxyTlsCertificate": "/etc/cert.pem"})
        self.assertIn("--smtpProxyTlsKey", str(caught.exception))


class RerouteNameTests(SynchronousTestCase):
    """
    smtpProxyRerouteName is the domain of contact addresses.
    """

    def test_normalised(self) -> None:
        """
        A trailing dot and upper case are taken off, so that contact
        addresses match it.
        """
        self.assertEqual(
            load({"smtpProxyRerouteName": "ACE.Example.COM."})["smtpProxyRerouteName"],
            "ace.example.com",
        )

    def test_ipRefused(self) -> None:
        """
        An IP address is refused: mail addresses name domains.
        """
        for value in ("192.0.2.1", "::1", "[::1]"):
            with self.assertRaises(ConfigError) as caught:
                load({"smtpProxyRerouteName": value})
            self.assertIn("--smtpProxyRerouteName", str(caught.exception))


class StoreTests(SynchronousTestCase):
    """
    C{store} and C{accountLease}: where the contacts are kept, and how long
    a node's lease on a POP3 account lasts.
    """

    def refused(self, options: dict[str, str], configPath: str | None = None) -> str:
        with self.assertRaises(ConfigError) as caught:
            load(options, configPath)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        return message

    def test_defaults(self) -> None:
        """
        By default the contacts are in SQLite, and a lease lasts a minute.
        """
        settings = load({})
        self.assertEqual(settings["store"], "sqlite")
        self.assertEqual(settings["accountLease"], 60.0)

    def test_postgresqlUris(self) -> None:
        """
        Both of libpq's URI schemes are taken, with their query options and
        several hosts, without the blanks around them.
        """
        for uri in (
            "postgresql://ace:pw@db.example:5432/ace?sslmode=verify-full",
            "postgres://db1.example,db2.example/ace?target_session_attrs=read-write",
            "postgresql:///ace?host=/run/postgresql",
        ):
            self.assertEqual(load({"store": f" {uri} "})["store"], uri)
        self.assertEqual(load({"accountLease": "2m"})["accountLease"], 120.0)

    def test_badStoreHidesPassword(self) -> None:
        """
        A store that is neither sqlite nor a PostgreSQL URI is refused with a
        sentence naming --store, and its password is never shown.
        """
        for value in (
            "mysql://ace:hunter2@db.example/ace",
            "postgresql://ace:hunter2@db .example/ace",
            "postgresql://ace:hunter2@[::1/ace",
            "sqlite3",
        ):
            message = self.refused({"store": value})
            self.assertIn("--store: expected sqlite or a URI such as", message)
            self.assertNotIn("hunter2", message)
        message = self.refused({"store": "mysql://ace:hunter2@db.example/ace"})
        self.assertIn("got 'mysql://ace:***@db.example/ace'.", message)

    def test_badStoreInFileHidesPassword(self) -> None:
        """
        A wrong store in the config file is refused with the file's line,
        without the password.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('\nstore = "postgresql://ace:hunter2@db.example/ace#x"\n')
        message = self.refused({}, path)
        self.assertIn(f"{path}, line 2: store: expected sqlite or a URI", message)
        self.assertNotIn("hunter2", message)

    def test_webhookRefusedWithPostgresql(self) -> None:
        """
        A webhook with a PostgreSQL store is refused at start-up, as the
        webhook's outbox is kept per node, and the password is not shown.
        """
        message = self.refused(
            {
                "webhookUrl": "https://ace.example/hook",
                "store": "postgresql://ace:hunter2@db.example/ace",
            }
        )
        self.assertIn("--webhookUrl cannot be used with a PostgreSQL --store", message)
        self.assertNotIn("hunter2", message)
        settings = load({"webhookUrl": "https://ace.example/hook"})
        self.assertEqual(settings["store"], "sqlite")

    def test_accountLeaseMustBePositive(self) -> None:
        """
        A lease of no time is refused, naming --accountLease.
        """
        message = self.refused({"accountLease": "0"})
        self.assertIn("--accountLease: expected a time", message)


class MaskPasswordTests(SynchronousTestCase):
    """
    L{maskPassword}, which keeps database passwords out of messages.
    """

    def test_masked(self) -> None:
        """
        The password of a URI, also one that holds an C{@}, and each
        C{password=} option are replaced; the rest stays readable.
        """
        cases = {
            "postgresql://ace:s3cr@t@db:5432/ace": "postgresql://ace:***@db:5432/ace",
            "cannot reach postgres://a:b@h/x (refused)": (
                "cannot reach postgres://a:***@h/x (refused)"
            ),
            "postgresql://db/ace?sslmode=require&password=pw": (
                "postgresql://db/ace?sslmode=require&password=***"
            ),
            "host=db password='p w' user=ace": "host=db password=*** user=ace",
            "postgresql://ace@db:5432/ace": "postgresql://ace@db:5432/ace",
            "sqlite": "sqlite",
        }
        for text, masked in cases.items():
            self.assertEqual(maskPassword(text), masked)
