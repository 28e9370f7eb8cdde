"""
Tests that what C{pip install .} installs is what the tests run: every
package of the source tree is listed in setup.cfg.
"""

from __future__ import annotations

import configparser
import os
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

import ace_mail

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ace_mail.__file__)))


def _listedPackages() -> set[str]:
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    return set(config["options"]["packages"].split())


class PackagingTests(SynchronousTestCase):
    """
    setup.cfg lists its packages one by one, so a new package must be added
    there by hand.
    """

    def setUp(self) -> None:
        if not os.path.exists(os.path.join(ROOT, "setup.cfg")):
            raise SkipTest("ace_mail is installed, not run from a source tree")

    def test_everyPackageListed(self) -> None:
        """
        Every folder under ace_mail with an C{__init__.py} is a package listed
        in setup.cfg, and nothing else is listed besides C{twisted.plugins}.
        """
        found = {
            os.path.relpath(folder, ROOT).replace(os.sep, ".")
            for folder, _, files in os.walk(os.path.join(ROOT, "ace_mail"))
            if "__init__.py" in files
        }
        self.assertEqual(_listedPackages(), found | {"twisted.plugins"})

    def test_pluginFolderIsNoPackage(self) -> None:
        """
        Neither C{twisted/} nor C{twisted/plugins/} of the source tree has an
        C{__init__.py}, which would hide Twisted's own package.
        """
        for folder in ["twisted", os.path.join("twisted", "plugins")]:
            path = os.path.join(ROOT, folder, "__init__.py")
            self.assertFalse(os.path.exists(path), path)
