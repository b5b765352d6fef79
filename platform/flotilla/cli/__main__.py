"""``python -m flotilla.cli``: the same as the ``flotilla`` command."""

from flotilla.cli.main import main

main()
