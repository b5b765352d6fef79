"""``python -m flotilla.cli``: the same as the ``flotilla`` command."""

from flotilla.cli.commands import main

main()
