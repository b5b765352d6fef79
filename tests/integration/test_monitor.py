"""Drift monitoring end to end on a real lakeFS and a real local Ray: a small family is trained and promoted, then judged
on fresh data from its own distribution (no alarm), on a stream with more old faces (alarm, naming the age slice), and
on a labelled occluded sample (ground truth: emotion degraded, gender not). Reports are committed with their lineage,
predictions are reused on a rerun, and bad input fails with a message, not a traceback.

The model is trained once for the module (2,000 faces, 12 epochs, about a minute): a 1-epoch model is near chance on
emotion and could not show a degradation. Everything is seeded, so each verdict is the same on every run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from flotilla.data.api import generate
from flotilla.data.store import read_manifest
from flotilla.data.synthetic import FaceSpec, Shift
from flotilla.data.validate import Thresholds
from flotilla.errors import MonitoringError, NotFoundError, SpecError
from flotilla.lineage import MonitorRun, read_commit
from flotilla.loop import monitor
from flotilla.specs import FamilySpec, parse_spec
from flotilla.training import train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def data_repo(hub):
    name = f"t-mon-{uuid.uuid4().hex[:8]}"
    hub.ensure_repo(name)
    lax = Thresholds(min_group_count=2)
    generate(hub, name, "faces", 2000, seed=5, thresholds=lax)
    generate(hub, name, "fresh", 500, seed=31, thresholds=lax)  # labelled, the training distribution
    generate(hub, name, "older", 500, seed=32, spec=FaceSpec(shift=Shift(age_mix=0.8)), labelled=False)
    generate(hub, name, "occluded", 600, seed=33, spec=FaceSpec(shift=Shift(occlusion=0.8)), thresholds=lax)
    generate(hub, name, "small", 12, seed=11, spec=FaceSpec(size=32), labelled=False)
    generate(hub, name, "one", 1, seed=12, labelled=False)
    yield hub.repo(name)
    hub.delete_repo(name)


@pytest.fixture(scope="module")
def model(hub, data_repo, local_ray) -> str:
    spec = {
        "name": "mon",
        "data": {"repo": data_repo.name, "dataset": "faces"},
        "model": {"width": 16},
        "epochs": 12,
        "batch_size": 128,
        "scaling": {"workers": 1, "cpus_per_worker": 1},
        "optim": {"lr": 0.003},
        "tracking": {"wandb": False},
        "merge_into": "main",
        "alias": "production",
    }
    train(parse_spec(FamilySpec, spec), hub=hub)
    return "mon@production"


@pytest.fixture(scope="module")
def fresh(hub, data_repo, model, tmp_path_factory):
    return monitor(hub, model, repo=data_repo.name, current="main", dataset="fresh", ground_truth_check=True,
                   out_dir=tmp_path_factory.mktemp("fresh"))  # fmt: skip


def test_fresh_data_from_the_training_distribution_raises_no_alarm(fresh, data_repo):
    assert fresh.verdict is not None and not fresh.drifted and not fresh.alarm, fresh.to_dict()["verdict"]
    assert {t.name for t in fresh.verdict.tests} == {"embedding", "prediction:age", "prediction:gender", "prediction:emotion"}
    assert fresh.reference["split"] == "val" and fresh.reference["dataset"] == "faces"
    assert fresh.slice_sources == {"age band": "labels", "gender": "labels"}  # fully labelled on both sides
    gt = fresh.ground_truth
    assert gt is not None and gt.degraded == () and gt.labelled == 500
    assert {c.task for c in gt.tasks} == {"age", "gender", "emotion"}
    for c in gt.tasks:  # the card's validation value is the recomputed reference (same model, same val split)
        assert c.card is not None and abs(c.card - c.reference) < 1e-3, c
        assert c.ci_low <= c.degradation <= c.ci_high


def test_the_report_is_committed_with_its_lineage(fresh, data_repo, hub):
    assert fresh.branch.startswith("monitor-") and fresh.commit
    record = read_commit(data_repo.commit_info(fresh.commit).metadata)
    assert isinstance(record, MonitorRun) and not record.drifted and record.dataset == "fresh"
    assert record.model_uri == fresh.model_uri and record.reference_commit == fresh.reference["commit"]
    assert record.input_commit == fresh.current["commit"] != record.reference_commit
    names = {o.path.rsplit("/", 1)[1] for o in data_repo.list(fresh.commit, fresh.report_path)}
    assert names == {"report.json", "report.html", "report.png", "examples.png", "ground_truth.png"}
    report = json.loads(data_repo.get(fresh.commit, fresh.report_path + "report.json"))
    assert report["drifted"] is False and report["branch"] == fresh.branch and report["model_uri"] == fresh.model_uri
    assert len([e for e in report["examples"] if e["side"] == "current"]) == 8
    local = Path(fresh.local_dir)
    assert (local / "report.html").read_bytes() == data_repo.get(fresh.commit, fresh.report_path + "report.html")
    assert (local / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(o.path.startswith("monitoring/") for o in data_repo.list("main", "monitoring/"))


def test_a_shifted_stream_raises_the_alarm_and_names_the_slice(hub, data_repo, model, tmp_path):
    lines: list[str] = []
    result = monitor(hub, model, repo=data_repo.name, current="main", dataset="older", out_dir=tmp_path, on_progress=lines.append)
    assert result.drifted and result.alarm
    rejected = {t.name for t in result.verdict.tests if t.rejected}
    assert "prediction:age" in rejected, result.to_dict()["verdict"]
    assert result.slice_sources["age band (predicted)"] == "predictions"  # unlabelled: sliced by what the model predicted
    grew = max((s for s in result.shares if s.adjusted_p <= 0.05), key=lambda s: s.change)
    assert grew.column == "age band (predicted)" and grew.change > 0.05, result.shares
    assert grew.value in {"50-59", "60-69", "70-79", "80+"}, grew
    assert result.shifted_slices()[0].startswith("age band (predicted)=")
    assert any("running inference" in line for line in lines)  # the first look at "older" predicts it
    record = read_commit(data_repo.commit_info(result.commit).metadata)
    assert isinstance(record, MonitorRun) and record.drifted

    again: list[str] = []  # one run is cheap to repeat: the predictions are found, not remade
    rerun = monitor(
        hub, model, repo=data_repo.name, current="main", dataset="older", out_dir=tmp_path, commit=False, on_progress=again.append
    )
    assert not any("running inference" in line for line in again) and sum("found" in line for line in again) == 2
    assert rerun.verdict.to_dict() == result.verdict.to_dict() and rerun.commit == ""


def test_ground_truth_flags_the_degraded_task_and_not_the_others(hub, data_repo, model, tmp_path):
    result = monitor(
        hub, model, repo=data_repo.name, current="main", dataset="occluded", ground_truth_check=True, out_dir=tmp_path
    )
    gt = result.ground_truth
    by_task = {c.task: c for c in gt.tasks}
    assert "emotion" in gt.degraded and by_task["emotion"].degradation > 0.05, by_task["emotion"]
    assert not by_task["gender"].degraded, by_task["gender"]
    assert result.alarm and "emotion" in read_commit(data_repo.commit_info(result.commit).metadata).degraded


def test_current_equal_to_the_training_data_is_no_drift_without_running_anything(hub, data_repo, model):
    lines: list[str] = []
    result = monitor(hub, model, repo=data_repo.name, current="main", on_progress=lines.append)
    assert result.verdict is None and not result.alarm and "own training data" in result.message
    assert result.commit == "" and len(lines) == 1


def test_bad_input_is_a_clear_error_and_writes_nothing(hub, data_repo, model):
    before = set(data_repo.branches())
    common = {"hub": hub, "model": model, "repo": data_repo.name}
    with pytest.raises(MonitoringError, match=r"no predictions of .* on fresh@") as info:
        monitor(**common, current="main", dataset="fresh", split="test", infer_missing=False)
    assert "flotilla infer" in info.value.hint
    with pytest.raises(SpecError, match=r"trained on 64x64 images .* 'small' holds 32x32"):
        monitor(**common, current="main", dataset="small")
    empty = next(s for s in ("train", "val", "test") if read_manifest(data_repo, "main", "one").counts[s] == 0)
    with pytest.raises(SpecError, match="has no samples"):
        monitor(**common, current="main", dataset="one", split=empty)
    with pytest.raises(NotFoundError, match=r"no-such-branch"):
        monitor(**common, current="no-such-branch", dataset="fresh")
    with pytest.raises(NotFoundError, match=r"no-such-dataset"):
        monitor(**common, current="main", dataset="no-such-dataset")
    with pytest.raises(SpecError, match="alpha"):
        monitor(**common, current="main", dataset="fresh", alpha=1.5)
    assert set(data_repo.branches()) == before


def test_cli_exit_codes_and_the_report_page(hub_settings, data_repo, model, tmp_path):
    from typer.testing import CliRunner

    from flotilla.cli import app

    env = {"COLUMNS": "250", "FLOTILLA_HOME": str(hub_settings.home), "FLOTILLA_HUB_PORT": str(hub_settings.hub_port)}
    base = ["monitor", model, "--repo", data_repo.name, "--current", "main", "--out", str(tmp_path)]
    out = CliRunner().invoke(app, [*base, "--dataset", "older"], env=env)
    assert out.exit_code == 3 and "DRIFT" in out.output and "shifted slice: age band (predicted)=" in out.output, out.output
    out = CliRunner().invoke(app, [*base, "--dataset", "fresh", "--no-infer"], env=env)
    assert out.exit_code == 0 and "no drift" in out.output, out.output
    out = CliRunner().invoke(app, [*base, "--dataset", "small"], env=env)
    assert out.exit_code == 1 and "32x32" in out.output and "Traceback" not in out.output, out.output

    page = next(tmp_path.glob("*older*/report.html"))
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no Chromium here to open the report page (make test installs it)")
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert 'id="verdict"' in dom and "ALARM" in dom and dom.count("<img") >= 2 and "age band (predicted)" in dom
