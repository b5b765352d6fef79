"""Real-format data through the gate from the command line (issue 20, item 2): a 60-image UTKFace folder fails
on what can be judged and passes with a documented flag or a thresholds file; a 300-image folder's 3 label
errors lead its report; failed ingest branches are listed and pruned by ``flotilla hub branches``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from flotilla.cli import app
from flotilla.data import layout, synthetic_samples

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def utk_folder(root: Path, n: int, *, female_every: int = 2, bad_ages: dict[int, int] | None = None) -> Path:
    """``n`` real JPEG faces named as UTKFace names them: ``<age>_<gender: 0 male, 1 female>_<race>_<datetime>.jpg``."""
    root.mkdir(parents=True)
    for i, s in enumerate(synthetic_samples(n, seed=20)):
        with Image.open(io.BytesIO(s.image)) as im:
            im.convert("RGB").save(buf := io.BytesIO(), format="JPEG", quality=90)
        age = (bad_ages or {}).get(i, round(s.age or 0))
        (root / f"{age}_{int(i % female_every == 0)}_{i % 5}_20170109{i:09d}.jpg").write_bytes(buf.getvalue())
    return root


@pytest.fixture
def flotilla(hub_settings):
    env = {"COLUMNS": "200", "FLOTILLA_HOME": str(hub_settings.home), "FLOTILLA_HUB_PORT": str(hub_settings.hub_port)}

    def run(*args: str, code: int = 0) -> str:
        out = CliRunner().invoke(app, [str(a) for a in args], env=env)
        assert out.exit_code == code, out.output
        assert "Traceback" not in out.output, out.output
        return out.output

    return run


def _error_lines(output: str) -> list[str]:
    """The error's header and its ' - ' items, in order (the console wraps long lines: whitespace is collapsed)."""
    flat = " ".join(output[output.index("error:") :].split())
    return flat.split(" - ")


def test_a_60_image_folder_fails_on_what_can_be_judged_and_passes_with_the_flag(flotilla, repo, tmp_path):
    folder = utk_folder(tmp_path / "UTKFace", 60, female_every=5)  # 12 female, 48 male
    base = ["data", "import", folder, "--format", "utkface", "--repo", repo.name]
    failed = flotilla(*base, "--name", "utk60", "--report-dir", tmp_path / "r1", code=1)
    lines = _error_lines(failed)
    # the first lines are the one group 60 samples can judge (gender: 2 x 20); the 9 age bands, 18 cells and 5
    # ethnicities are too few to judge and come after it as warnings, in one line, not 27 errors
    assert "failed validation: 1 error(s) in representativeness.gender (12)" in lines[0], lines
    assert lines[1].startswith("representativeness.gender: 12 affected: gender 'female': 12 of 60 samples"), lines
    assert len(lines) == 2 and "warning(s), which do not fail the gate: representativeness.age_band" in lines[1], lines
    assert "--allow-underrepresented" in failed and "--min-per-group" in failed and "Thresholds(" not in failed
    assert not repo.exists("main", layout.manifest_path("utk60"))
    report = json.loads((tmp_path / "r1" / "utk60-validation.json").read_text())
    assert report["issues"][0]["check"] == "representativeness.gender" and report["issues"][0]["key"] == "female"
    assert (tmp_path / "r1" / "utk60-labels.png").read_bytes().startswith(b"\x89PNG")

    passed = flotilla(*base, "--name", "utk60", "--allow-underrepresented", "--report-dir", tmp_path / "r2")
    assert "validation passed with" in passed and "merged into main" in passed
    assert repo.exists("main", layout.manifest_path("utk60"))

    gate = tmp_path / "gate.yaml"  # the keys of an ingest job's thresholds: block
    gate.write_text("min_group_count: 10\n")
    flotilla(*base, "--name", "utk60b", "--thresholds", gate, "--report-dir", tmp_path / "r3")
    gate.write_text("min_grup_count: 10\n")
    typo = flotilla(*base, "--name", "utk60c", "--thresholds", gate, code=1)
    assert "min_grup_count: unknown key (did you mean 'min_group_count'?)" in typo


def test_a_300_image_folder_reports_its_3_label_errors_first(flotilla, repo, tmp_path):
    bad = {7: 150, 70: 150, 170: 150}
    folder = utk_folder(tmp_path / "UTKFace", 300, bad_ages=bad)
    out = flotilla("data", "import", folder, "--format", "utkface", "--name", "utk300", "--repo", repo.name,
                   "--report-dir", tmp_path / "r", code=1)  # fmt: skip
    lines = _error_lines(out)
    assert "failed validation" in lines[0] and lines[0].split(" in ", 1)[1].startswith("labels.age (3)"), lines
    assert lines[1].startswith("labels.age: 3 affected: age must be finite and within [0, 120]"), lines
    ids = sorted(f"utk-150_{int(i % 2 == 0)}_{i % 5}_20170109{i:09d}" for i in bad)
    assert all(f"{sid} (age=150)" in lines[1] for sid in ids), lines[1]
    issues = json.loads((tmp_path / "r" / "utk300-validation.json").read_text())["issues"]
    assert issues[0]["check"] == "labels.age" and issues[0]["sample_ids"] == ids
    assert all(i["check"].startswith("representativeness") for i in issues[1:])
    hist = json.loads((tmp_path / "r" / "utk300-validation.json").read_text())["histograms"]["age"]
    assert (hist["above"], hist["above_max"]) == (3, "150")  # drawn as a red bar beside the histogram


def test_hub_branches_lists_failed_ingests_and_prune_deletes_only_them(flotilla, repo, tmp_path):
    folder = utk_folder(tmp_path / "UTKFace", 60, female_every=5)
    for name in ("a", "b"):
        flotilla("data", "import", folder, "--format", "utkface", "--name", name, "--repo", repo.name, code=1)
    failed = sorted(b for b in repo.branches() if b.startswith("ingest-"))
    assert len(failed) == 2
    # someone is fixing b: uncommitted work keeps it; an experiment branch is never an ingest to prune
    repo.put(failed[1], "datasets/b/notes.txt", b"fixing")
    with repo.transact("keep-me", prefix="exp-") as exp:
        exp.put("x.txt", b"x")
    listing = flotilla("hub", "branches", "--repo", repo.name)
    assert failed[0] in listing and "failed" in listing and "open" in listing and "exp-keep-me" in listing
    assert set(repo.branches()) >= {*failed, "main"}  # listing deletes nothing
    pruned = flotilla("hub", "branches", "--repo", repo.name, "--prune")
    assert "deleted 1 branch(es)" in pruned and failed[0] in pruned
    assert set(repo.branches()) == {"main", failed[1], "exp-keep-me"}
