"""The data report as a user sees it: written from a real lakeFS, opened in a real headless Chromium.

The screenshot stays in ``artifacts/test/data-report.png`` (``/artifacts/`` is git-ignored), as the
dashboard test keeps its own.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from tests.browser import Browser, chromium_or_skip

from flotilla.data import generate, read_labels, relabel
from flotilla.data.findings import FINDINGS, SUMMARY, AuditSummary, audit_dir, task_columns
from flotilla.data.page import GridLayout, data_report
from flotilla.data.report import Thresholds

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "test"
IMAGES = "JSON.stringify(Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]))"


@pytest.fixture
def faces(hub, repo):
    generate(hub, repo.name, "faces", 240, seed=3, thresholds=Thresholds(min_group_count=1))
    return repo


def _audit(repo, worst_ids: list[str]) -> AuditSummary:
    """A findings table + summary on an ``audit-*`` branch, as ``flotilla.audit`` writes them (data/findings.py)."""
    labels = read_labels(repo, "main", "faces").to_pylist()
    rows = []
    for r in labels:
        flagged = r["sample_id"] in worst_ids
        score = 0.01 * (1 + worst_ids.index(r["sample_id"])) if flagged else 0.9
        issue, score_col, given, suggested = task_columns("emotion")
        rows.append(
            {
                "sample_id": r["sample_id"], "split": r["split"], "outlier": False, "outlier_score": 0.8,
                "near_duplicate": False, "near_duplicate_score": 0.9, "near_duplicate_of": None,
                "exact_duplicate_of": None, "issues": ["label:emotion"] if flagged else [],
                "worst_score": score if flagged else 1.0,
                issue: flagged, score_col: score, given: float(r["emotion"]), suggested: float((r["emotion"] + 1) % 7),
            }
        )  # fmt: skip
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    commit = repo.resolve("main")
    summary = AuditSummary(
        "a1", repo.name, "faces", commit, "lakefs://x/y/models/run/m/model.pt", commit, "test", ("emotion",), len(rows),
        {"label:emotion": len(worst_ids)}, created=time.time(),
    )  # fmt: skip
    with repo.transact("faces-a1", "main", prefix="audit-", message="audit faces a1") as branch:
        branch.put(audit_dir("faces", "a1") + FINDINGS, buf.getvalue())
        branch.put(audit_dir("faces", "a1") + SUMMARY, summary.to_json())
    return summary


async def _look(binary: str, profile: Path, page: Path, shot: Path) -> tuple[str, list, list[str]]:
    async with Browser(binary, profile) as b:
        await b.open(page.as_uri())
        text = await b.eval("document.body.innerText")
        images = json.loads(await b.eval(IMAGES))
        await b.screenshot(shot)
        await b.eval("1")  # drain the events that arrived meanwhile
        return text, images, b.errors


@pytest.mark.timeout(300)
def test_the_report_renders_in_chromium_with_its_thumbnails(hub, faces, tmp_path):
    binary = chromium_or_skip()
    first = read_labels(faces, "main", "faces").column("sample_id")[0].as_py()
    relabel(hub, faces.name, "faces", {first: {"emotion": "sad"}}, reason="reviewed <b>by</b> hand")
    page = data_report(hub, faces.name, "main", "faces", out=tmp_path / "report.html")
    doc = page.read_text()
    assert "<script" not in doc and "http://" not in doc and "https://" not in doc  # opens offline, runs nothing
    (tmp_path / "profile").mkdir()
    text, images, errors = asyncio.run(_look(binary, tmp_path / "profile", page, ARTIFACTS / "data-report.png"))
    print(f"screenshot: {ARTIFACTS / 'data-report.png'}")
    assert errors == []
    grid = [i for i in images if i[0].startswith("syn-3-")]
    assert len(grid) >= 3 * 6, images  # gender, emotion and age-band grids, several thumbnails each
    assert all(complete and width == 64 for _, complete, width in images), images
    assert "PASSED" in text and "happy" in text and "40-49" in text
    assert "No audit of this dataset yet" in text and f"flotilla data audit {faces.name}/main/faces" in text
    assert "ingest" in text and "240 samples" in text
    assert "label change" in text and "1 sample (emotion: 1); reviewed <b>by</b> hand" in text  # shown as text
    assert (ARTIFACTS / "data-report.png").stat().st_size > 20_000


@pytest.mark.timeout(300)
def test_the_latest_audits_worst_examples_appear_with_their_images(hub, faces, tmp_path):
    binary = chromium_or_skip()
    ids = read_labels(faces, "main", "faces").column("sample_id").to_pylist()
    worst = [ids[17], ids[5], ids[101]]
    _audit(faces, worst)
    page = data_report(hub, faces.name, "main", "faces", out=tmp_path / "report.html", split="train")
    (tmp_path / "profile").mkdir()
    text, images, errors = asyncio.run(_look(binary, tmp_path / "profile", page, ARTIFACTS / "data-report-audit.png"))
    assert errors == []
    section = text[text.index("Latest audit") : text.index("Provenance")]
    assert [sid for sid in section.split() if sid in worst] == worst  # worst score first
    assert "showing the 3 worst of 3" in section and "label:emotion" in section and "→" in section
    audit_imgs = [i for i in images if i[0] in worst]
    assert len(audit_imgs) >= 3 and all(c and w == 64 for _, c, w in audit_imgs), images


def test_show_grid_writes_a_png_of_the_expected_size(hub_settings, faces, tmp_path):
    from typer.testing import CliRunner

    from flotilla.cli import app

    env = {"FLOTILLA_HOME": str(hub_settings.home), "FLOTILLA_HUB_PORT": str(hub_settings.hub_port)}
    out = tmp_path / "grid.png"
    res = CliRunner().invoke(
        app,
        ["data", "show", f"{faces.name}/main/faces", "--grid", "--out", str(out), "--by", "gender", "--per-group", "5"],
        env=env,
    )
    assert res.exit_code == 0, res.output
    with Image.open(out) as im:
        assert im.size == GridLayout(rows=2, per_row=5).size  # female, male
        assert len(set(im.crop((130, 0, im.size[0], im.size[1])).getdata())) > 50  # thumbnails, not a blank canvas
    res = CliRunner().invoke(app, ["data", "show", f"{faces.name}/main/faces", "--grid", "--by", "colour"], env=env)
    assert res.exit_code == 1 and "no label column 'colour'" in res.output, res.output
    res = CliRunner().invoke(app, ["data", "show", f"{faces.name}/main/faces"], env={**env, "COLUMNS": "200"})
    assert res.exit_code == 0 and "240" in res.output and "provenance.source" in res.output, res.output
    page = tmp_path / "page.html"
    res = CliRunner().invoke(app, ["data", "report", f"{faces.name}/main/faces", "--out", str(page), "--split", "val"], env=env)
    assert res.exit_code == 0 and "split val" in page.read_text(), res.output
    res = CliRunner().invoke(app, ["data", "report", f"{faces.name}/main"], env=env)
    assert res.exit_code == 1 and "is not <repo>/<ref>/<dataset>" in res.output, res.output


def test_the_browser_reports_a_broken_image_and_a_console_error(tmp_path):
    """The checks above pass on an empty error list: this shows the list fills when a page does go wrong."""
    binary = chromium_or_skip()
    page = tmp_path / "broken.html"
    page.write_text('<html><body><img alt="gone" src="missing.png"><script>console.error("boom")</script></body></html>')
    (tmp_path / "profile").mkdir()
    _, images, errors = asyncio.run(_look(binary, tmp_path / "profile", page, tmp_path / "broken.png"))
    assert images == [["gone", True, 0]]
    assert any("boom" in x for x in errors) and any("missing.png" in x for x in errors), errors
