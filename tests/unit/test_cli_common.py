"""The CLI's error printer: a FlotillaError's message and hint reach the user whole, brackets included."""

import pytest
import typer

from flotilla.cli.common import friendly
from flotilla.errors import SpecError


def test_brackets_in_an_error_are_printed_not_taken_for_rich_markup(capsys):
    @friendly
    def fails():  # user input quoted back: a YAML list, and a closing tag Rich would choke on
        raise SpecError("data.ref values [main, cleaned] are not branches of [/faces]", hint="see [bold]docs[/bold]")

    with pytest.raises(typer.Exit) as info:
        fails()
    assert info.value.exit_code == 1
    err = " ".join(capsys.readouterr().err.split())  # Rich wraps long lines
    assert "values [main, cleaned] are not branches of [/faces]" in err and "see [bold]docs[/bold]" in err


def test_version_is_an_option_and_a_command():
    from typer.testing import CliRunner

    from flotilla.cli import app
    from flotilla.version import __version__

    for args in (["--version"], ["version"]):
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 0 and out.output.strip() == __version__, out.output
