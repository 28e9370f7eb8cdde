"""
The tests of ace-mail, run with trial.

Importing this package registers and loads the deterministic hypothesis
profile C{ace-mail}, so that every run tries the same examples.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ace-mail",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ace-mail")
