"""``python -m yurt.cli``: the same as the ``yurt`` command."""

from yurt.cli.main import main

main()
