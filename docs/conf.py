"""
Sphinx configuration for ace-mail's documentation (MyST reads the Markdown pages).
"""

import pathlib
import re

_init = pathlib.Path(__file__).parent.parent / "ace_mail" / "__init__.py"
_version = re.search(r'__version__ = "([^"]+)"', _init.read_text(encoding="utf-8"))

project = "ace-mail"
author = "the ace-mail developers"
copyright = "the ace-mail developers"
release = _version.group(1) if _version else ""
version = release

extensions = ["myst_parser"]
exclude_patterns = ["_build"]
root_doc = "index"
html_theme = "alabaster"
html_static_path: list[str] = []
