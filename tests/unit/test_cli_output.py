"""The CLI's output: flotilla's progress lines, -q/-v/--json, tables that survive a pipe, Ray's console kept in a log."""

from __future__ import annotations

import io
import json
import logging
import pickle
import sys

import pytest
import typer
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from flotilla.cli.output import flag, mode, print_json, print_table, progress_view, ray_console, table_rows, with_output
from flotilla.progress import EpochEvent, NullView, PlainView, TrialEvent, format_epoch, format_trial, short_metrics

METRICS = {
    "epoch": 1.0,
    "train/loss": 6.40429,
    "train/samples_per_s": 555.7,
    "val/age/mae": 22.35717,
    "val/age/n": 200.0,
    "val/gender/accuracy": 0.475,
}


def test_an_epoch_line_shows_the_loss_and_validation_metrics_without_counts():
    assert short_metrics(METRICS) == {"loss": 6.40429, "age/mae": 22.35717, "gender/accuracy": 0.475}
    line = format_epoch(EpochEvent("family", 2, 4, METRICS))
    assert line == "family  epoch 2/4  loss 6.404  age/mae 22.36  gender/accuracy 0.475"
    assert format_epoch(EpochEvent("age", 1, 3)) == "age  epoch 1/3"


def test_a_trial_line_names_its_state_epoch_objective_and_the_best_so_far():
    line = format_trial(TrialEvent("88bb400d", "pruned", 1, 4, "val/score", 0.61234, 0.7))
    assert line == "trial 88bb400d  pruned  epoch 1/4  val/score 0.6123  (best 0.7)"
    assert format_trial(TrialEvent("a1", "errored")) == "trial a1  errored"


def test_plain_view_writes_one_line_per_event_without_ansi():
    out = io.StringIO()
    view = PlainView(out)
    view.epoch(EpochEvent("family", 1, 2, METRICS))
    view.trial(TrialEvent("t1", "running", 1, 2, "val/score", 0.5, 0.5))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("family  epoch 1/2") and "\x1b" not in out.getvalue()


def _table() -> Table:
    t = Table(title="[bold]jobs[/]", caption="data main @ abc")
    for col in ("submission id", "status", "branch"):
        t.add_column(col, no_wrap=True)
    long_id = "train-face-family-20261207-025647-c6df-and-a-long-tail"
    t.add_row(long_id, "[green]SUCCEEDED[/]", "exp-" + "q" * 60)
    return t


def test_a_piped_table_is_tab_separated_whole_cells_no_markup():
    buf = io.StringIO()
    print_table(_table(), Console(file=buf, width=40))  # a file is no terminal; 40 columns would squeeze rich's table
    lines = buf.getvalue().splitlines()
    assert lines[0] == "jobs" and lines[1] == "submission id\tstatus\tbranch" and lines[-1] == "data main @ abc"
    assert lines[2].split("\t") == ["train-face-family-20261207-025647-c6df-and-a-long-tail", "SUCCEEDED", "exp-" + "q" * 60]
    assert "\x1b" not in buf.getvalue()


def test_a_narrow_terminal_folds_long_cells_instead_of_cutting_them():
    buf = io.StringIO()
    print_table(_table(), Console(file=buf, width=50, force_terminal=True, color_system=None))
    text = buf.getvalue()
    assert "…" not in text
    assert text.count("q") == 60 and text.count("-") >= "train-face-family-20261207-025647-c6df-and-a-long-tail".count("-")


def test_table_rows_reads_any_rich_table():
    header, rows = table_rows(_table())
    assert header == ["submission id", "status", "branch"] and rows[0][1] == "SUCCEEDED"


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @with_output
    def show(name: str = typer.Argument("x"), follow: bool = flag("-f", "--follow", help="keep going")) -> None:
        m = mode()
        if m.json:
            print_json({"name": name, "follow": follow})
        elif not m.quiet:
            print(f"name {name} follow {follow} verbose {m.verbose}")
        else:
            print(name)

    return app


def test_output_options_come_with_every_decorated_command():
    runner = CliRunner()
    out = runner.invoke(_app(), ["y", "--json", "-f"])
    assert out.exit_code == 0 and json.loads(out.stdout) == {"name": "y", "follow": True}
    assert runner.invoke(_app(), ["y", "-q"]).stdout == "y\n"
    assert runner.invoke(_app(), ["y", "-v"]).stdout == "name y follow False verbose True\n"
    both = runner.invoke(_app(), ["y", "-q", "-v"])
    assert both.exit_code == 2 and "contradict" in both.output
    assert mode().json is False  # outside a command: the defaults


def test_flags_show_no_value_in_help_and_take_none():
    runner = CliRunner()
    help_text = runner.invoke(_app(), ["--help"], env={"COLUMNS": "120"}).output
    follow = next(line for line in help_text.splitlines() if "--follow" in line)
    assert "<bool>" not in follow and "keep going" in follow
    assert all("<bool>" not in line for line in help_text.splitlines() if "--json" in line or "--quiet" in line)
    assert runner.invoke(_app(), ["y", "--follow", "true"]).exit_code == 2  # a flag: "true" is an extra argument


def test_progress_view_follows_the_output_options():
    assert isinstance(progress_view(), PlainView)  # not a terminal here: plain lines
    seen = {}

    app = typer.Typer()

    @app.command()
    @with_output
    def run() -> None:
        seen["view"] = progress_view()

    CliRunner().invoke(app, ["-q"])
    assert isinstance(seen["view"], NullView)


def test_ray_console_keeps_prints_and_ray_logging_in_the_log(tmp_path, capsys):
    log = tmp_path / "run" / "ray.log"
    ray_logger = logging.getLogger("flotilla-test.ray-like")
    handler = logging.StreamHandler(sys.stderr)
    ray_logger.addHandler(handler)
    ray_logger.propagate = False
    try:
        with ray_console(log, Console(file=io.StringIO())):
            print("(RayTrainWorker pid=1) worker line")
            print("stderr line", file=sys.stderr)
            ray_logger.warning("Started a local Ray instance")
        ray_logger.warning("after the run")
    finally:
        ray_logger.removeHandler(handler)
    captured = capsys.readouterr()
    text = log.read_text()
    assert "worker line" in text and "stderr line" in text and "Started a local Ray instance" in text
    assert "worker line" not in captured.out + captured.err and "Started a local Ray" not in captured.err
    assert "after the run" in captured.err  # the handler was given back its stream


def test_ray_console_shows_the_logs_tail_and_path_on_failure(tmp_path):
    log = tmp_path / "ray.log"
    err = io.StringIO()
    with pytest.raises(RuntimeError), ray_console(log, Console(file=err, width=200)):
        print("the worker said why")
        raise RuntimeError("boom")
    assert "the worker said why" in err.getvalue() and str(log) in err.getvalue()


def test_verbose_streams_rays_output_to_the_terminal_and_still_logs_it(tmp_path):
    log = tmp_path / "ray.log"
    app = typer.Typer()

    @app.command()
    @with_output
    def run() -> None:
        with ray_console(log, Console(file=io.StringIO())):
            print("(TrainController pid=7) Started training worker group")
        print_json({"log": str(log)})

    quiet = CliRunner().invoke(app, ["--json"])
    assert json.loads(quiet.stdout) == {"log": str(log)} and "TrainController" not in quiet.output
    loud = CliRunner().invoke(app, ["-v", "--json"])
    assert json.loads(loud.stdout) == {"log": str(log)}  # the result alone on stdout
    assert "(TrainController pid=7)" in loud.stderr
    assert log.read_text().count("(TrainController pid=7)") == 2


def test_a_sweeps_trials_are_told_running_completed_pruned_or_errored_with_the_best_so_far():
    from types import SimpleNamespace

    from flotilla.tune.watch import TrialProgressCallback

    events: list[TrialEvent] = []

    class Recorder(NullView):
        def trial(self, event: TrialEvent) -> None:
            events.append(event)

    watch = TrialProgressCallback(Recorder(), "val/score", "max", max_epochs=4)
    full = SimpleNamespace(trial_id="a1", last_result=None)
    cut = SimpleNamespace(trial_id="b2", last_result={"epochs_done": 1, "val/score": 0.2})
    watch.on_trial_start(0, [], full)
    watch.on_trial_result(0, [], full, {"epochs_done": 1, "val/score": 0.3})
    full.last_result = {"epochs_done": 4, "val/score": 0.5}
    watch.on_trial_complete(0, [], full)
    watch.on_trial_complete(0, [], cut)
    watch.on_trial_error(0, [], SimpleNamespace(trial_id="c3", last_result=None))
    assert [(e.trial, e.state) for e in events] == [
        ("a1", "running"),
        ("a1", "running"),
        ("a1", "completed"),
        ("b2", "pruned"),
        ("c3", "errored"),
    ]
    assert [e.best for e in events] == [None, 0.3, 0.5, 0.5, 0.5] and events[3].epoch == 1
    restored = pickle.loads(pickle.dumps(watch))  # Tune keeps its callbacks in its saved state: without the view
    assert isinstance(restored.view, NullView) and restored.best == 0.5
