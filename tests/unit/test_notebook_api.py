"""The Python API as a notebook meets it: real signatures, every subpackage one attribute away, specs as a
path, a mapping or an object with ``overrides=``, spec files found from any directory, short reprs, and
W&B online exactly when W&B itself is logged in."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import flotilla
from flotilla.data.pinning import DataRef
from flotilla.errors import SpecError
from flotilla.jobs import load_job_spec
from flotilla.specfiles import checkout_root, resolve_spec_path
from flotilla.specs import FamilySpec, family_spec, load_family_spec, parse_overrides, parse_sets
from flotilla.training import ModelResult, TrainResult
from flotilla.tune import SweepResult, TrialRecord, load_sweep_spec
from flotilla.tune.spec import sweep_spec

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = str(ROOT / "platform")


def _python(code: str, env: dict[str, str] | None = None, args: list[str] | None = None) -> str:
    """``code`` in a fresh interpreter (imports and W&B's session state start clean), its stdout."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NETRC"))}
    out = subprocess.run(
        [sys.executable, "-c", code, *(args or [])],
        env={**base, "PYTHONPATH": PLATFORM, **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    return out.stdout.strip()


# signatures, docstrings, lazy subpackages


def test_the_entry_points_show_their_real_signatures_and_docstrings():
    for fn, params in (
        (flotilla.train, ["spec", "overrides", "hub", "address", "run_id", "hooks", "progress"]),
        (flotilla.sweep, ["spec", "overrides", "hub", "address", "sweep_id", "progress"]),
        (flotilla.jobs.submit, ["spec", "address", "overrides", "hub", "settings", "dry_run"]),
    ):
        assert list(inspect.signature(fn).parameters) == params, fn
        assert "overrides" in (fn.__doc__ or "") and "Args:" in (fn.__doc__ or ""), fn
    for name in ("reproduce", "infer", "monitor", "audit_dataset"):
        fn = getattr(flotilla, name)
        assert "args" not in inspect.signature(fn).parameters and fn.__doc__, name


def test_every_subpackage_is_an_attribute_of_a_bare_import_which_stays_light():
    out = _python(
        "import sys, json, flotilla\n"
        "light = not ({'ray', 'torch', 'wandb', 'lakefs'} & set(sys.modules))\n"
        "subs = [n for n in flotilla.SUBPACKAGES if getattr(flotilla, n).__name__ == 'flotilla.' + n]\n"
        "print(json.dumps([light, subs, 'jobs' in dir(flotilla), flotilla.jobs.submit.__module__]))"
    )
    light, subs, listed, module = json.loads(out)
    assert light, "import flotilla pulled in a heavy library"
    assert set(subs) == set(flotilla.SUBPACKAGES) and "jobs" in subs and "tune" in subs
    assert listed and module == "flotilla.jobs.submission"
    with pytest.raises(AttributeError, match="no attribute 'jobz'"):
        flotilla.jobz  # noqa: B018


# specs as a path, a mapping or an object, with overrides


def test_overrides_mean_what_set_means_as_strings_or_a_mapping():
    as_sets = parse_sets(["epochs=3", "optim.lr=0.01", "data={ref: dev}"])
    assert parse_overrides(["epochs=3", "optim.lr=0.01", "data={ref: dev}"]) == as_sets
    assert parse_overrides({"epochs": 3, "optim.lr": 0.01, "data": {"ref": "dev"}}) == as_sets
    assert parse_overrides(None) == {} == parse_overrides({})
    with pytest.raises(SpecError, match=r"^overrides\['epochs.x'\] conflicts with overrides\['epochs'\]"):
        parse_overrides({"epochs": 3, "epochs.x": 1})
    with pytest.raises(SpecError, match="not the one string 'epochs=3'") as info:
        parse_overrides("epochs=3")
    assert info.value.hint == "overrides=['epochs=3']"


def test_a_family_spec_comes_from_a_path_a_mapping_or_an_object_alike():
    from_file = family_spec(ROOT / "jobs/face_family.yaml", overrides={"epochs": 2})
    from_dict = family_spec(load_family_spec(ROOT / "jobs/face_family.yaml").model_dump(mode="json"), ["epochs=2"])
    from_object = family_spec(load_family_spec(ROOT / "jobs/face_family.yaml"), overrides={"epochs": 2})
    assert from_file == from_dict == from_object and from_file.epochs == 2
    assert family_spec({"name": "f"}).name == "f" and isinstance(family_spec({"name": "f"}), FamilySpec)
    with pytest.raises(SpecError, match=r"epochs: Input should be greater than or equal to 1"):
        family_spec({"name": "f"}, overrides={"epochs": 0})
    with pytest.raises(SpecError, match="a family spec is a FamilySpec, a mapping or a spec file's path, not a number 3"):
        family_spec(3)  # type: ignore[arg-type]


# spec paths: one rule, and the shipped specs from anywhere


def test_shipped_specs_are_found_by_name_or_path_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = ROOT / "jobs/face_family.yaml"
    assert checkout_root() == ROOT
    assert resolve_spec_path("face_family", "family") == shipped == resolve_spec_path("jobs/face_family.yaml", "family")
    assert load_family_spec("face_family", ["epochs=1"]).epochs == 1
    # a sweep's relative base resolves beside the sweep file, else among the shipped specs: absolute once loaded
    demo = load_sweep_spec("demo")
    assert Path(str(demo.base)) == shipped and demo.family().name == "face-family"
    assert sweep_spec("tuning/demo.yaml", overrides={"budget.trials": 2}).budget.trials == 2
    # a job's spec: likewise, and the sweep that job names carries its own base
    job = load_job_spec("train_face_family")
    assert Path(str(job.spec)) == shipped
    # a file of the same name here wins over the shipped one
    (tmp_path / "face_family.yaml").write_text("name: mine\n")
    assert load_family_spec("face_family.yaml").name == "mine"


def test_a_spec_found_nowhere_lists_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        load_family_spec("face_famly")
    assert (
        info.value.message == f"family spec face_famly does not exist under {tmp_path} (did you mean face_family?), "
        "nor is it a shipped family spec (face_family)"
    )
    assert info.value.hint == (
        "a relative path is resolved against the current directory, then among the shipped family specs: "
        "face_family (jobs/face_family.yaml)"
    )
    with pytest.raises(SpecError, match=r"nor is it a shipped sweep spec \(demo, face_family, face_family_pareto\)"):
        load_sweep_spec("tuning/nope.yaml")


# reprs


def _model(name: str = "family") -> ModelResult:
    history = [{"epoch": e, **{f"val/m{i}": 0.5 for i in range(40)}} for e in range(50)]
    metrics = {
        "age/mae": 4.1234,
        "age/n": 300.0,
        "gender/accuracy": 0.91,
        "emotion/accuracy": 0.5,
        "emotion/macro_f1": 0.4,
        "x": 1,
    }
    return ModelResult(
        name, ["age"], "exp-run-1", "c" * 64, f"lakefs://faces/{'c' * 64}/models/run-1/{name}/model.pt", metrics, history, 9.0,
        wandb_run="exp-run-1",
    )  # fmt: skip


def test_results_show_the_essentials_not_their_history():
    model = _model()
    text = repr(model)
    assert len(text) < 400 and "epoch" not in text and "/n=" not in text
    assert model.model_uri in text and "branch exp-run-1" in text and "commit cccccccccccc)" in text
    assert "age/mae=4.123" in text and "(+1 more)" in text
    result = TrainResult("run-1", DataRef("faces", "d" * 64, "synthetic", "main"), [model, _model("age")], 12.0)
    lines = repr(result).splitlines()
    assert lines[0] == "TrainResult(run run-1, data lakefs://faces/dddddddddddd (synthetic), 2 model(s), 12s)"
    assert len(lines) == 3 and all(line.startswith("  ModelResult(") for line in lines[1:])
    html = result._repr_html_()
    assert html.count("<tr>") == 3 and model.model_uri in html and "exp-run-1" in html
    trial = TrialRecord(
        "88bb400d", {"optim.lr": 0.0012345, "weighting": "fixed"}, "stopped", 2, {"val/score": 1.5}, "trial-s-88bb400d"
    )
    assert repr(trial) == (
        "TrialRecord(88bb400d stopped, 2 epoch(s), val/score=1.5, params {optim.lr=0.001234, weighting=fixed}, "
        "branch trial-s-88bb400d)"
    )
    won = TrialRecord("aa11", {}, "completed", 4, {"val/score": 2.0}, "trial-s-aa11", kept=True)
    sweep = SweepResult("s", "/home/x/sweeps/s", {}, "val/score", "max", [trial, won], won, "e" * 64, "main")
    assert repr(sweep) == (
        "SweepResult(sweep s: 2 trial(s) (1 completed, 1 stopped), winner aa11 val/score=2 on trial-s-aa11, "
        "promoted into main at eeeeeeeeeeee)"
    )
    assert "(deleted)" in sweep._repr_html_() and "<script" not in SweepResult("<script>", "", {}, "m", "max")._repr_html_()


# W&B: online exactly when W&B itself finds credentials


# One interpreter imports the tracking module (torch and Ray: seconds) once, then forks a child per case: each
# child sets its own environment before its first W&B import, so W&B's lookup and session state start clean in
# every case, as in a fresh interpreter, at the cost of a fork instead of an interpreter start.
_MODES = """
import json, os, sys
from flotilla.training.tracking import choose_mode
assert "wandb" not in sys.modules, "W&B was imported before the fork: the cases would share its state"
out = []
for env in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.environ.update(env)
        os.write(write, choose_mode()[0].encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as r:
        out.append(r.read())
    _, status = os.waitpid(pid, 0)
    assert status == 0, (env, status)
print(json.dumps(out))
"""


def test_wandb_is_online_when_logged_in_by_any_of_its_own_means(tmp_path):
    key = "k" * 40
    logged_in = tmp_path / "logged-in"
    logged_in.mkdir()
    netrc = logged_in / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {key}\n")  # what `wandb login` writes
    netrc.chmod(0o600)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    cases = [
        ({"HOME": str(logged_in)}, "online"),  # wandb login: the key in ~/.netrc only
        ({"HOME": str(fresh)}, "offline"),
        ({"HOME": str(fresh), "WANDB_API_KEY": key}, "online"),
        ({"HOME": str(logged_in), "WANDB_MODE": "offline"}, "offline"),  # an explicit mode decides
        ({"HOME": str(fresh), "WANDB_MODE": "disabled"}, "disabled"),
    ]
    got = json.loads(_python(_MODES, args=[json.dumps([env for env, _ in cases])]))
    assert got == [mode for _, mode in cases]
