"""The gate on small and real datasets (issue 20, item 2): representativeness by size, the order of a report,
thresholds from a YAML file, the plot's verdicts, and the state of flotilla's branches (pure logic)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flotilla.data import layout
from flotilla.data.gateplot import verdicts
from flotilla.data.report import Thresholds, ValidationReport, failure_hint, failure_message
from flotilla.data.validate import validate
from flotilla.errors import SpecError
from flotilla.hub.branches import BranchInfo, branch_state, kind_of_branch
from flotilla.jobs.specs import IngestJob, parse_job_spec
from flotilla.lineage import IngestCommit
from flotilla.specs import load_thresholds


def _png(i: int) -> bytes:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _samples(n: int, *, female_every: int = 2) -> list[layout.Sample]:
    """Ages spread over the bands, gender female (code 0) every ``female_every``-th sample, no emotion (UTKFace-like)."""
    return [
        layout.Sample(
            f"s{i:04d}", _png(i), "png", age=float(5 + (i * 7) % 80), gender=0 if i % female_every == 0 else 1, emotion=None
        )
        for i in range(n)
    ]


def _run(samples: list[layout.Sample], t: Thresholds | None = None) -> ValidationReport:
    shards = [layout.decode_table(layout.encode_shard(c)) for c in layout.chunked(samples, 100)]
    return validate(layout.labels_table(samples), shards, t)


def test_groups_too_small_to_pass_warn_and_the_others_fail():
    # 60 samples: gender (2 slices x 20 = 40) can be judged, age bands (9 x 20) and their cells (18 x 20) cannot
    r = _run(_samples(60, female_every=6))  # 10 female of 60
    sev = {(i.check, i.key): i.severity for i in r.issues if i.check.startswith("representativeness")}
    assert sev[("representativeness.gender", "female")] == "error"
    assert {s for (c, _), s in sev.items() if c != "representativeness.gender"} == {"warning"}
    assert not r.passed and [i.check for i in r.errors] == ["representativeness.gender"]
    warned = next(i for i in r.warnings if i.check == "representativeness.age_band")
    assert "too few for 9 slices of min_group_count=20; an error from 180" in warned.reason
    # the same mix at 400 samples: every group is big enough to be judged (even the 18 cells), so a short cell fails
    big = _run(_samples(400, female_every=6))
    assert "representativeness.gender_x_age_band" in {i.check for i in big.errors}
    assert not [i for i in big.warnings if i.check.startswith("representativeness")]
    # balanced gender at 60: nothing can fail, the import passes with warnings
    assert _run(_samples(60)).passed


def test_explicit_severities_and_flags_override_the_size_rule():
    samples = _samples(60, female_every=6)
    assert _run(samples, Thresholds(representativeness="warning")).passed
    strict = _run(samples, Thresholds(representativeness="error"))
    assert {i.severity for i in strict.issues if i.check.startswith("representativeness")} == {"error"}
    assert _run(samples, Thresholds(min_group_count=10)).passed  # 10 female: enough; the cells still only warn
    assert Thresholds().representativeness_severity(39, 2) == "warning"
    assert Thresholds().representativeness_severity(40, 2) == "error"
    assert Thresholds(min_group_count=0).representativeness_severity(1, 18) == "error"


def test_real_problems_come_before_representativeness():
    samples = _samples(300, female_every=7)
    for s, age in zip(samples[:3], (150.0, -4.0, 999.0), strict=True):
        s.age = age
    samples[5].image = b"\x89PNG\r\n\x1a\nnot a png"
    r = _run(samples)
    checks = [i.check for i in r.issues]
    first_repr = next(k for k, c in enumerate(checks) if c.startswith("representativeness"))
    assert checks[:2] == ["images.truncated", "labels.age"] and first_repr == 2, checks
    assert r.errors[1].count == 3 and r.errors[1].sample_ids == ["s0000", "s0001", "s0002"]
    lines = failure_message(r).splitlines()
    assert "images.truncated" in lines[1] and "labels.age: 3 affected" in lines[2]
    assert all(s in lines[2] for s in ("age=150", "age=-4", "age=999"))
    assert "warning(s), which do not fail the gate" in lines[-1]
    # the age histogram keeps what is out of range, for the plot to show
    hist = r.histograms["age"]
    assert (hist["below"], hist["below_min"], hist["above"], hist["above_max"]) == (1, "-4", 2, "999")
    assert sum(hist["counts"]) == 300 - 3


def test_hints_name_the_cli_flags_and_the_spec_key_not_python():
    r = _run(_samples(60, female_every=6))
    hint = failure_hint(r)
    assert "--allow-underrepresented" in hint and "--min-per-group" in hint and "thresholds:" in hint
    assert "Thresholds(" not in hint and "Thresholds." not in hint


def test_thresholds_file_is_parsed_strictly_and_flags_go_on_top(tmp_path: Path):
    f = tmp_path / "gate.yaml"
    f.write_text("min_grup_count: 5\nrepresentativeness: warnin\n")
    with pytest.raises(SpecError) as info:
        load_thresholds(f)
    text = "\n".join(info.value.problems)
    assert "min_grup_count: unknown key (did you mean 'min_group_count'?)" in text
    assert "representativeness: Input should be 'auto', 'error' or 'warning'" in text
    f.write_text("min_group_count: 5\nmax_missing: 0.5\n")
    t = load_thresholds(f, {"min_group_count": 2, "representativeness": "warning"})
    assert t == Thresholds(min_group_count=2, max_missing=0.5, representativeness="warning")
    assert load_thresholds(None, {"min_group_count": 3}) == Thresholds(min_group_count=3)


def test_the_plot_colours_exactly_the_failing_slices(tmp_path: Path):
    r = _run(_samples(60, female_every=6))
    v = verdicts(r)
    assert v["gender"] == {"female": "error"} and set(v["age_band"].values()) == {"warning"}
    back = ValidationReport.from_json(r.to_json())  # the slice an issue is about survives JSON
    assert verdicts(back) == v
    # a passing report with warnings: orange bars, no red anywhere; with a failing slice: red appears
    ok = _run(_samples(60))

    def pixels(report: ValidationReport, rgb: tuple[int, int, int]) -> int:
        with Image.open(report.plot(tmp_path / f"{id(report)}.png")) as im:
            a = np.asarray(im.convert("RGB")).reshape(-1, 3)
        return int((np.abs(a.astype(int) - rgb).sum(axis=1) < 12).sum())

    red, orange = (214, 39, 40), (255, 127, 14)  # matplotlib's tab:red, tab:orange
    assert pixels(ok, orange) > 200 and pixels(ok, red) == 0
    assert pixels(r, red) > 200


def test_branch_kinds_and_states():
    assert kind_of_branch("ingest-utk-20261207-030000") == "ingest"
    assert kind_of_branch("review-fix-abc") == "review-fix" and kind_of_branch("main") is None
    failed = {str(k): str(v) for k, v in IngestCommit("utk", 60, False, "c0", {}).to_metadata().items()}
    passed = {str(k): str(v) for k, v in IngestCommit("utk", 60, True, "c0", {}).to_metadata().items()}
    assert branch_state(0, False, failed, "main")[0] == "failed"
    assert branch_state(3, False, failed, "main")[0] == "open"  # someone is fixing it: never pruned
    assert branch_state(0, True, passed, "main")[0] == "merged"
    assert branch_state(0, False, passed, "main")[0] == "unmerged"  # validated, merge pending: kept
    assert branch_state(0, False, {}, "main")[0] == "unmerged"  # e.g. a label fix committed on it

    def info(kind: str, state: str) -> BranchInfo:
        return BranchInfo("faces", f"{kind}-x", kind, "c1", 1.0, state, "")  # type: ignore[arg-type]

    assert info("ingest", "failed").prunable and info("ingest", "merged").prunable
    assert not info("ingest", "open").prunable and not info("ingest", "unmerged").prunable
    assert not info("experiment", "failed").prunable and not info("trial", "merged").prunable


def test_an_import_jobs_thresholds_block_is_strict_and_takes_the_same_settings():
    files = {"format": "utkface", "path": "/data/UTKFace"}
    job = parse_job_spec({"kind": "ingest", "name": "utk", "files": files, "thresholds": {"representativeness": "warning"}})
    assert isinstance(job, IngestJob) and job.thresholds == Thresholds(representativeness="warning")
    with pytest.raises(SpecError) as info:
        parse_job_spec({"kind": "ingest", "name": "utk", "files": files, "thresholds": {"min_per_group": 5}})
    assert info.value.problems == ["thresholds.min_per_group: unknown key (did you mean 'min_group_count'?)"]
