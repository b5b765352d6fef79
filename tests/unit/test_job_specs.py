"""Job specs: every problem reported at once (with did-you-mean), credentials kept off the dashboard,
the shipped project snapshot, and the result line protocol. No cluster or hub needed."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml

from flotilla.errors import SpecError
from flotilla.jobs.entrypoint import RESULT_MARKER
from flotilla.jobs.handle import parse_result
from flotilla.jobs.specs import (
    ActiveRoundJob,
    InferJob,
    IngestJob,
    MonitorJob,
    SweepJob,
    TrainJob,
    family_of,
    load_job_spec,
    parse_job_spec,
    sweep_of,
)
from flotilla.jobs.submission import PINNED_DIR, project_root, stage_job, submission_id
from flotilla.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _problems(data: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_job_spec(data, "test spec", root=ROOT)
    return info.value.problems


def test_shipped_job_specs_are_valid():
    ingest = load_job_spec(ROOT / "jobs/ingest_synthetic.yaml", root=ROOT)
    assert isinstance(ingest, IngestJob) and ingest.synthetic is not None and ingest.files is None
    train = load_job_spec(ROOT / "jobs/train_face_family.yaml", root=ROOT)
    assert isinstance(train, TrainJob)
    assert family_of(train, ROOT).epochs == train.overrides["epochs"]
    # the sweep jobs, the demo's included (`make demo` submits jobs/sweep_demo.yaml): their sweep specs load whole
    for name, sweep_name in (("sweep_demo", "demo-sweep"), ("sweep_face_family", "face-family-sweep")):
        job = load_job_spec(ROOT / f"jobs/{name}.yaml", root=ROOT)
        assert isinstance(job, SweepJob) and sweep_of(job, ROOT).name == sweep_name
    shipped = {p.name for p in (ROOT / "jobs").glob("*.yaml")} - {"face_family.yaml"}  # a family spec, not a job
    infer = load_job_spec(ROOT / "jobs/infer_production.yaml", root=ROOT)
    assert isinstance(infer, InferJob) and infer.model == "face-family@production" and not infer.use_gpu
    watch = load_job_spec(ROOT / "jobs/monitor_production.yaml", root=ROOT)
    al = load_job_spec(ROOT / "jobs/active_round_demo.yaml", root=ROOT)
    assert isinstance(al, ActiveRoundJob) and al.annotator == "scripted" and al.budget == 200
    assert isinstance(watch, MonitorJob) and watch.current == "main" and watch.alpha == 0.05 and not watch.use_gpu
    assert shipped == {
        "ingest_synthetic.yaml",
        "train_face_family.yaml",
        "train_face_family_gpu.yaml",
        "sweep_demo.yaml",
        "sweep_face_family.yaml",
        "infer_production.yaml",
        "monitor_production.yaml",
        "active_round_demo.yaml",
    }, "a job spec was added: check it here"


def test_misspelled_keys_are_all_reported_at_once_with_did_you_mean():
    problems = _problems(
        {
            "kind": "ingest",
            "name": "x",
            "reepo": "faces",
            "synthetic": {"nn": 10, "seed": 1},
            "thresholds": {"min_group_cont": 2},
            "runtime_env": {"env_var": {}},
        }
    )
    text = "\n".join(problems)
    assert len(problems) == 4, text
    assert "reepo: unknown key (did you mean 'repo'?)" in text
    assert "synthetic.nn: unknown key (did you mean 'n'?)" in text
    assert "thresholds.min_group_cont: unknown key (did you mean 'min_group_count'?)" in text
    assert "runtime_env.env_var: unknown key (did you mean 'env_vars'?)" in text


def test_an_ingest_job_holds_the_data_layers_own_configs():
    """One class per concern: the job's generator settings and gate are the FaceSpec and Thresholds Python builds."""
    from flotilla.data import FaceSpec, Shift, Thresholds

    job = parse_job_spec(
        {
            "kind": "ingest",
            "name": "x",
            "synthetic": {"n": 5, "spec": {"size": 48, "shift": {"lighting": 0.5}}},
            "thresholds": {"min_group_count": 2, "max_missing": {"age": 0.5}},
        }
    )
    assert job.synthetic.spec == FaceSpec(size=48, shift=Shift(lighting=0.5))
    assert job.thresholds == Thresholds(min_group_count=2, max_missing={"age": 0.5})
    problems = _problems(
        {
            "kind": "ingest",
            "name": "x",
            "synthetic": {"n": 5, "spec": {"size": 8, "shift": {"lightning": 0.1}}},
            "thresholds": {"max_missing": {"mood swing": 0.1}, "representativeness": "maybe"},
        }
    )
    text = "\n".join(problems)
    assert len(problems) == 4, text
    assert "synthetic.spec.size: Input should be greater than or equal to 32" in text
    assert "synthetic.spec.shift.lightning: unknown key (did you mean 'lighting'?)" in text
    assert "thresholds.max_missing: keys must be label column names, got ['mood swing']" in text
    assert "thresholds.representativeness: Input should be 'auto', 'error' or 'warning'" in text


def test_generator_settings_written_flat_are_pointed_under_spec():
    problems = _problems({"kind": "ingest", "name": "x", "synthetic": {"n": 5, "size": 64, "lighting": 0.2}})
    assert len(problems) == 1 and problems[0].startswith(
        "synthetic: the generator's settings go under spec: write spec.size, spec.shift.lighting"
    ), problems


def test_train_job_reports_its_own_and_its_familys_problems_together():
    problems = _problems(
        {
            "kind": "train",
            "name": "t",
            "spec": "jobs/face_family.yaml",
            "overides": {},
            "overrides": {"epochs": 0, "optim": {"lrr": 0.1}},
        }
    )
    text = "\n".join(problems)
    assert "overides: unknown key (did you mean 'overrides'?)" in text
    assert "family: epochs:" in text
    assert "family: optim.lrr: unknown key (did you mean 'lr'?)" in text


def test_unknown_kind_suggests_the_closest_and_still_lists_unknown_keys():
    problems = _problems({"kind": "ingets", "name": "x", "sythetic": {}})
    assert "did you mean 'ingest'" in problems[0]
    assert any(p.startswith("sythetic: unknown key (did you mean 'synthetic'?)") for p in problems)
    assert "kind: missing" in _problems({"name": "x"})[0]


def test_exactly_one_source_and_a_missing_family_file():
    both = _problems({"kind": "ingest", "name": "x", "synthetic": {"n": 5}, "files": {"format": "utkface", "path": "/d"}})
    assert any("exactly one source" in p for p in both)
    missing = _problems({"kind": "train", "name": "x", "spec": "jobs/nope.yaml"})
    assert missing == [f"spec: jobs/nope.yaml does not exist under {ROOT}, nor is it a shipped family spec (face_family)"]


def test_a_spec_that_is_a_directory_says_so_and_names_the_spec_files_in_it(tmp_path):
    # is_file() alone called an existing directory missing ("jobs does not exist under ...")
    problems = _problems({"kind": "train", "name": "x", "spec": "jobs"})
    # jobs/ also holds job specs, which a job cannot point at: only the family spec is offered
    assert problems == [
        f"spec: jobs is a directory under {ROOT}, not a spec file: name one YAML spec in it (jobs/face_family.yaml)"
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError) as info:
        parse_job_spec({"kind": "train", "name": "x", "spec": "empty"}, root=tmp_path)
    assert info.value.problems == [f"spec: empty is a directory under {tmp_path}, not a spec file: name one YAML spec in it"]


def test_ingest_names_break_the_hubs_rules_at_check_time_not_on_the_cluster():
    problems = _problems(
        {"kind": "ingest", "name": "x", "repo": "Bad Repo!", "dataset": "bad/name", "into": "no such", "synthetic": {"n": 5}}
    )
    assert problems == [
        "repo: invalid repository id 'Bad Repo!': repository ids are 3-63 characters of lowercase a-z, 0-9 and '-', "
        "starting with a letter or digit (e.g. 'faces' or 'faces-v2')",
        "dataset: invalid dataset name 'bad/name': up to 100 letters, digits, '_', '-' and '.', no '/' and no '..' "
        "(e.g. 'synthetic', 'utkface' or 'faces-2026-11')",
        "into: invalid branch id 'no such': branch ids use ASCII letters, digits, '_' and '-', start with a letter, "
        "digit or '_', and are at most 96 characters (the branch the dataset is merged into, e.g. 'main')",
    ]
    assert len(_problems({"kind": "ingest", "name": "x", "dataset": "../up", "synthetic": {"n": 5}})) == 1
    ok = parse_job_spec(
        {"kind": "ingest", "name": "x", "repo": "faces-v2", "dataset": "faces-2026.11", "into": "dev_1", "synthetic": {"n": 5}}
    )
    assert (ok.repo, ok.dataset, ok.into) == ("faces-v2", "faces-2026.11", "dev_1")


@pytest.mark.parametrize(
    "name",
    [
        "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY",
        "MY_API_TOKEN",
        "RAY_AUTH_TOKEN",
        "DB_PASSWORD",
        "OPENAI_API_KEY",
        "HF_API_KEY",
        "GCP_SA_KEY",
        "AWS_ACCESS_KEY_ID",
        "SSH_PRIVATE",
    ],
)
def test_credentials_are_refused_in_env_vars(name):
    problems = _problems({"kind": "ingest", "name": "x", "synthetic": {"n": 5}, "runtime_env": {"env_vars": {name: "v"}}})
    assert any(name in p and "dashboard" in p for p in problems)
    fine = {"WANDB_MODE": "offline", "KEYBOARD_LAYOUT": "us", "AWS_REGION": "eu-west-1", "INDEX": "http://host/simple"}
    ok = parse_job_spec({"kind": "ingest", "name": "x", "synthetic": {"n": 5}, "runtime_env": {"env_vars": fine}})
    assert ok.runtime_env.env_vars == fine


def test_user_password_urls_are_refused_in_env_values_and_pip():
    env = {"DATABASE_URL": "postgres://app:hunter2@db/x"}
    problems = _problems({"kind": "ingest", "name": "x", "synthetic": {"n": 5}, "runtime_env": {"env_vars": env}})
    assert any("DATABASE_URL" in p and "user:password@" in p for p in problems)
    pip = ["torch", "git+https://me:ghp_abc@github.com/org/pkg.git"]
    problems = _problems({"kind": "ingest", "name": "x", "synthetic": {"n": 5}, "runtime_env": {"pip": pip}})
    assert any(p.startswith("runtime_env.pip") and "user:password@" in p and "ghp_abc" not in p for p in problems), problems


@pytest.mark.skipif(importlib.util.find_spec("flotilla.tune.spec") is None, reason="flotilla.tune not present")
def test_sweep_job_validates_the_sweep_spec_it_points_at():
    job = parse_job_spec(
        {"kind": "sweep", "name": "s", "spec": "tuning/face_family.yaml", "overrides": {"budget": {"trials": 2}}}, root=ROOT
    )
    assert isinstance(job, SweepJob)
    problems = _problems({"kind": "sweep", "name": "s", "spec": "tuning/face_family.yaml", "overrides": {"budgett": {}}})
    assert any(p.startswith("sweep: budgett: unknown key") for p in problems)
    bad_metric = {"objective": {"weights": {"val/age/mae": -0.02, "val/emotion/acuracy": 1.0}}}
    problems = _problems({"kind": "sweep", "name": "s", "spec": "tuning/face_family.yaml", "overrides": bad_metric})
    assert any("val/emotion/acuracy" in p and "val/emotion/accuracy" in p for p in problems), problems


def test_submission_ids_are_readable_and_unique():
    job = parse_job_spec({"kind": "ingest", "name": "My Ingest_v2", "synthetic": {"n": 5}})
    ids = {submission_id(job) for _ in range(20)}
    assert len(ids) == 20
    assert all(i.startswith("ingest-my-ingest-v2-") for i in ids)


def test_staged_project_has_the_pinned_spec_and_no_local_state(tmp_path):
    root = tmp_path / "proj"
    (root / "platform/flotilla").mkdir(parents=True)
    (root / "platform/flotilla/__init__.py").write_text("")
    (root / "jobs").mkdir()
    (root / "jobs/a.yaml").write_text("x: 1")
    for junk in (".venv/bin", ".git", "artifacts/test", "platform/flotilla/__pycache__", "home/hub"):
        (root / junk).mkdir(parents=True)
    (root / "home/hub/credentials.json").write_text("{}")
    (root / "stray-credentials").mkdir()
    (root / "stray-credentials/credentials.json").write_text("{}")
    settings = Settings(home=root / "home", cache=tmp_path / "cache")
    job = parse_job_spec({"kind": "ingest", "name": "x", "synthetic": {"n": 5}})
    stage = stage_job(root, settings, "sid-1", job)
    src = stage / "src"
    shipped = {p.relative_to(src).as_posix() for p in src.rglob("*")}
    pinned = yaml.safe_load((src / PINNED_DIR / "sid-1.yaml").read_text())
    shutil.rmtree(stage)
    assert {"platform/flotilla/__init__.py", "jobs/a.yaml", f"{PINNED_DIR}/sid-1.yaml"} <= shipped
    assert not any(s.startswith((".venv", ".git", "artifacts", "home")) or "__pycache__" in s for s in shipped)
    assert not any(s.endswith("credentials.json") for s in shipped)
    assert pinned["kind"] == "ingest"


def test_outside_a_checkout_only_the_pinned_spec_is_staged(tmp_path):
    """A pip-installed flotilla submits from wherever the user stands: that directory is not shipped."""
    cwd = tmp_path / "home-of-someone"
    (cwd / ".aws").mkdir(parents=True)
    (cwd / ".aws/credentials").write_text("[default]")
    (cwd / "notes.txt").write_text("private")
    job = parse_job_spec({"kind": "ingest", "name": "x", "synthetic": {"n": 5}})
    stage = stage_job(cwd, Settings(home=tmp_path / "fh", cache=tmp_path / "cache"), "sid-2", job)
    shipped = {p.relative_to(stage / "src").as_posix() for p in (stage / "src").rglob("*") if p.is_file()}
    shutil.rmtree(stage)
    assert shipped == {f"{PINNED_DIR}/sid-2.yaml"}


def test_result_line_protocol():
    logs = "starting\n" + RESULT_MARKER + json.dumps({"ok": True, "n": 1}) + "\nray: worker exited\n"
    assert parse_result(logs) == {"ok": True, "n": 1}
    assert parse_result("no result here\n") is None


def test_project_root_is_the_source_checkout():
    assert project_root() == ROOT


def test_ctrl_c_while_following_logs_is_a_keyboard_interrupt_and_closes_the_stream():
    """Ctrl-C arrives while the log stream waits for the next chunk; the caller must see KeyboardInterrupt
    (the CLI turns it into "stopped following"), not RuntimeError from closing a running generator.

    The stand-in client only supplies ``get_job_info`` and ``tail_job_logs``: what is under test is the asyncio wrapper.
    """
    import asyncio
    import os
    import signal
    import threading

    from flotilla.jobs.handle import JobHandle

    closed = []

    class Client:
        def get_job_info(self, sid):  # the id is known (tail asks first)
            return {"submission_id": sid}

        async def tail_job_logs(self, _sid):
            try:
                yield "first chunk\n"
                await asyncio.sleep(60)  # the job is quiet: the user presses Ctrl-C here
                yield "never"
            finally:
                closed.append(True)

    handle = JobHandle("train-x-20260101-000000-abcd", Client())
    chunks = handle.tail(follow=True)
    assert next(chunks) == "first chunk\n"
    # Python's own handler, as in the CLI's process (an earlier test's ray.init may have replaced it here)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))  # a real SIGINT, as a terminal sends
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            next(chunks)
    finally:
        timer.join()
        signal.signal(signal.SIGINT, previous)
    assert closed == [True]


def test_a_damaged_result_line_is_a_job_error():
    from flotilla.jobs.client import JobError

    assert parse_result(f'noise\n{RESULT_MARKER}{{"ok": true}}\n') == {"ok": True}
    with pytest.raises(JobError, match="damaged"):
        parse_result(f'{RESULT_MARKER}{{"ok": tr[worker] interleaved\n')
