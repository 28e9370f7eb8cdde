"""
ace-mail: the mail server of the ACE contact centre.

Public names live in the modules that define them; this package holds
only the version.
"""

__version__ = "0.1.0"
