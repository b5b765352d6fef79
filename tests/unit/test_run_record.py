"""A run's record (issue 22, item 4): what ``flotilla train resume`` continues a killed run from, and the clean
errors before any hub or Ray is reached (an unknown run, a record that is not one, a misused command)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flotilla.cli import app
from flotilla.data.pinning import DataRef
from flotilla.errors import ConfigError, NotFoundError
from flotilla.registry.address import ModelLocation
from flotilla.settings import Settings
from flotilla.specs import FamilySpec, family_spec
from flotilla.training.record import RunRecord, run_dir


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOTILLA_HOME", str(tmp_path / "home"))
    return Settings.from_env()


def test_a_record_round_trips_the_spec_data_commit_parent_and_branches(settings):
    spec = family_spec({"name": "fam", "epochs": 3, "data": {"repo": "faces"}})
    parent = ModelLocation("faces", "c" * 64, "models/r0/family/model.pt")
    record = RunRecord(
        "fam-1", spec.model_dump(mode="json"), DataRef("faces", "d" * 64, "synthetic", "main"), parent,
        {"family": "exp-fam-1"}, 1.0, merge_into="main",
    )  # fmt: skip
    path = record.save(settings)
    assert path == run_dir("fam-1", settings) / "run.json" and oct(path.stat().st_mode & 0o777) == "0o600"
    loaded = RunRecord.load("fam-1", settings)
    assert loaded == record and loaded.finished is None
    assert isinstance(loaded.family(), FamilySpec) and loaded.family() == spec
    assert RunRecord.load("fam-1", settings).data.commit == "d" * 64
    finished = loaded.done(settings)
    assert finished.finished is not None and RunRecord.load("fam-1", settings) == finished


def test_unknown_or_broken_records_are_clean_errors(settings):
    with pytest.raises(NotFoundError, match="no run 'nope' on this machine"):
        RunRecord.load("nope", settings)
    (run_dir("broken", settings)).mkdir(parents=True)
    (run_dir("broken", settings) / "run.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        RunRecord.load("broken", settings)
    (run_dir("broken", settings) / "run.json").write_text('{"run_id": "broken"}')
    with pytest.raises(ConfigError, match="not a run record"):
        RunRecord.load("broken", settings)


def test_train_resume_takes_one_run_id_and_nothing_else(settings):
    runner = CliRunner()
    for args in (["train", "resume"], ["train", "resume", "r1", "--set", "epochs=2"], ["train", "resume", "r1", "--check"]):
        out = runner.invoke(app, args, env={"COLUMNS": "300"})
        assert out.exit_code != 0 and "takes a run id and nothing else" in out.output, out.output
    out = runner.invoke(app, ["train", "spec.yaml", "extra"], env={"COLUMNS": "300"})
    assert out.exit_code != 0 and "unexpected argument 'extra'" in out.output
    out = runner.invoke(app, ["train", "resume", "no-such-run"], env={"COLUMNS": "200"})
    assert out.exit_code == 1 and "no run 'no-such-run'" in out.output and "Traceback" not in out.output
