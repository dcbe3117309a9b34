"""``python -m agent`` is the ``agent`` command."""

from .cli import main

main()
