"""``python -m thead.cli`` (and ``torchrun -m thead.cli train ...``)."""

from thead.cli import entry

entry()
