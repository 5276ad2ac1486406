"""``python -m thead``."""

from thead.cli import entry

entry()
