"""smtpcore.testing: a toolkit for testing and fuzzing mail software, in any language.

- :mod:`smtpcore.testing.check`: a battery of checks for any SMTP server.
- :mod:`smtpcore.testing.fuzz`: coverage-guided fuzzing of the machines.
"""

__all__: list[str] = []
