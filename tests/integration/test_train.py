"""Ray Train on a real local Ray, reading a real lakeFS: lineage, DeepSpeed vs DDP, fault tolerance, transfer."""

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

import pytest
import ray
import torch
from tests.chaos import KillWorker
from tests.integration.helpers import TRAIN_REPO, tiny

from flotilla.data.api import generate
from flotilla.data.validate import Thresholds
from flotilla.errors import ConflictError, DivergedError, MergeConflictError, NotFoundError, SpecError
from flotilla.registry import parse_lakefs_uri
from flotilla.training import ModelResult, merge_family, train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def data_repo(hub):
    hub.ensure_repo(TRAIN_REPO)
    generate(hub, TRAIN_REPO, "faces", 900, seed=5, thresholds=Thresholds(min_group_count=3))
    yield hub.repo(TRAIN_REPO)
    hub.delete_repo(TRAIN_REPO)


@pytest.fixture(scope="module")
def family(hub, data_repo, local_ray):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WANDB_DIR", raising=False)  # W&B's runs go under the run's own folder, as for a user
        return train(tiny("fam"), hub=hub)


def test_shared_family_run_lives_on_its_branch_with_lineage(family, data_repo, hub):
    (model,) = family.models
    assert model.name == "family" and model.tasks == ["age", "gender", "emotion"]
    card = json.loads(data_repo.get(model.commit, f"models/{family.run_id}/family/card.json"))
    assert card["data"]["commit"] == data_repo.resolve("main") == family.data.commit
    assert card["code"]["git_sha"] and card["config"]["name"] == "fam" and card["parent"] is None
    assert set(card["metrics"]) >= {"age/mae", "gender/accuracy", "gender/auc", "emotion/accuracy", "emotion/macro_f1"}
    # what ran it, as rank 0 saw it: versions, device, the run's shape
    env = card["environment"]
    assert env["packages"]["torch"] == metadata.version("torch") and torch.__version__.startswith(env["packages"]["torch"])
    assert env["packages"]["ray"] == ray.__version__ and env["python"] == platform.python_version()
    assert env["workers"] == tiny("fam").scaling.workers == 2 and env["backend"] == "ddp" and env["device"] == "cpu"
    metas = [o.path for o in data_repo.list(model.commit, f"runs/{family.run_id}/") if o.path.endswith("/meta.json")]
    assert metas and all(json.loads(data_repo.get(model.commit, p))["environment"] == env for p in metas)  # rank 0's
    # a dirty tree's diff lies beside the card, and its hash is the card's
    code, base = card["code"], f"models/{family.run_id}/family/"
    if code["dirty"]:
        diff = data_repo.get(model.commit, base + "code.diff")
        assert code["diff"] == "code.diff" and code["diff_sha256"] == hashlib.sha256(diff).hexdigest()
    else:
        assert code["diff_sha256"] is None and not data_repo.exists(model.commit, base + "code.diff")
    history = json.loads(data_repo.get(model.commit, f"models/{family.run_id}/family/metrics.json"))
    assert len(history) == 2 and history[1]["train/loss"] < history[0]["train/loss"]
    messages = [c.message for c in data_repo.log(model.branch, 6)]
    assert messages[0].startswith("Model family")
    assert "family: checkpoint epoch 1" in messages and "family: checkpoint epoch 0" in messages
    _, commit, path = parse_lakefs_uri(model.model_uri)
    state = torch.load(__import__("io").BytesIO(data_repo.get(commit, path)), weights_only=True)
    assert set(state) == {"config", "state"} and "heads.emotion.weight" in "".join(state["state"])
    # W&B ran offline on rank 0 only, under the run's folder (not Ray's temp dir), and the card names its run
    tracked = card["tracking"]["wandb"]
    run_folder = hub.settings.home / "runs" / family.run_id
    assert tracked["id"] == model.branch == model.wandb_run and tracked["group"] == family.run_id
    assert tracked["mode"] == "offline" and tracked["url"] is None and Path(tracked["dir"]) == run_folder
    run_dirs = list(run_folder.glob("wandb/offline-run-*"))
    assert len(run_dirs) == 1 and run_dirs[0].name.endswith(f"-{model.branch}"), run_dirs  # one run for two workers: rank 0's
    # ... with the data commit in its config, and no credential in any of its files
    everything = b"".join(f.read_bytes() for f in run_dirs[0].rglob("*") if f.is_file())
    assert family.data.commit.encode() in everything
    creds = hub.credentials
    assert creds.secret_access_key.encode() not in everything and creds.access_key_id.encode() not in everything
    # a second run under the same id would pick up this run's checkpoints: refused before it trains
    with pytest.raises(ConflictError, match=f"run '{family.run_id}' already exists"):
        train(tiny("fam"), hub=hub, run_id=family.run_id)
    assert data_repo.resolve(model.branch) == model.commit
    # a merge target that does not exist is found before training, not after
    with pytest.raises(NotFoundError, match="merge_into: no branch 'mian'"):
        train(tiny("fam", merge_into="mian"), hub=hub)
    # ... and one with uncommitted changes (lakeFS refuses to merge into it), before training too
    data_repo.create_branch("dirty-into", "main", exist_ok=True)
    data_repo.put("dirty-into", "notes.txt", b"staged, never committed")
    with pytest.raises(ConflictError, match=r"'dirty-into' .* has 1 uncommitted change") as err:
        train(tiny("fam", merge_into="dirty-into"), hub=hub)
    assert "notes.txt" in err.value.message and "merge_into" in err.value.message
    data_repo.delete_branch("dirty-into")


def test_a_family_is_merged_whole_or_not_at_all(repo):
    repo.put("main", "base.txt", "base")
    base = repo.commit("main", "base").id
    models = []
    for name in ("age", "gender", "emotion"):
        branch = repo.create_branch(f"exp-run-{name}", base)
        repo.put(branch, f"models/run/{name}/model.pt", name)
        commit = repo.commit(branch, f"Model {name}", {"flotilla.model": name}).id
        models.append(ModelResult(name, [name], branch, commit, "", {}, [], 0.0))
    repo.create_branch("into-clash", base)
    repo.put("into-clash", "models/run/gender/model.pt", "someone else's")
    head = repo.commit("into-clash", "a clashing gender model").id
    with pytest.raises(MergeConflictError) as err:  # gender conflicts after age merged: the target gets neither
        merge_family(repo, models, "into-clash", "run")
    assert "not merged into 'into-clash' (none of them is on it)" in err.value.message and "promote-" not in str(err.value)
    assert "exp-run-gender" in err.value.hint
    assert repo.resolve("into-clash") == head and not repo.exists("into-clash", "models/run/age/model.pt")
    assert not [b for b in repo.branches() if b.startswith("promote-")], "the staging branch was left behind"
    repo.create_branch("into-clean", base)
    merge_family(repo, models, "into-clean", "run")
    assert repo.commit_info("into-clean").metadata["flotilla.models"] == "age,gender,emotion"
    for m in models:
        assert repo.get("into-clean", f"models/run/{m.name}/model.pt") == m.name.encode()
        assert repo.commit_info(m.merge_commit).metadata["flotilla.model"] == m.name


def test_deepspeed_zero2_matches_ddp_on_a_tiny_fixed_seed_run(hub, data_repo, local_ray):
    ddp = train(tiny("cmp-ddp", epochs=1, tracking={"wandb": False}), hub=hub)
    ds = train(
        tiny("cmp-ds", epochs=1, backend="deepspeed", deepspeed={"stage": 2, "dtype": "fp32"}, tracking={"wandb": False}), hub=hub
    )
    # ZeRO-Offload with flotilla's own torch optimiser (DeepSpeed refused it by default: every attempt failed)
    off = train(
        tiny(
            "cmp-off",
            epochs=1,
            backend="deepspeed",
            deepspeed={"stage": 2, "dtype": "fp32", "offload_optimizer": True},
            tracking={"wandb": False},
        ),
        hub=hub,
    )

    def optimizer_state(result):  # the last checkpoint's train state: rank 0 keeps the optimiser only under DDP
        model = result.models[0]
        states = [o.path for o in data_repo.list(model.branch, f"runs/{result.run_id}/") if o.path.endswith("/train_state.pt")]
        (path,) = states[-1:]
        return torch.load(__import__("io").BytesIO(data_repo.get(model.branch, path)), weights_only=True)["optimizer"]

    # DeepSpeed really ran (its engine keeps ZeRO's partitioned state; a silent fall-back to DDP would not)
    assert optimizer_state(ddp) is not None and optimizer_state(ds) is None and optimizer_state(off) is None
    a = ddp.models[0].history[0]["train/loss"]
    for other in (ds, off):
        b = other.models[0].history[0]["train/loss"]
        assert abs(a - b) / a < 0.02, (a, b)
        assert abs(ddp.metric("age/mae") - other.metric("age/mae")) < 0.5


def test_deepspeed_bf16_trains_and_its_checkpoint_serves_in_fp32(hub, data_repo, local_ray):
    """bf16 is what ``dtype: auto`` picks on a GPU; forced here so CPU CI runs the same cast.

    DeepSpeed >= 0.18 casts parameters to bf16 and leaves buffers in fp32: the model's input took
    the dtype of a buffer and BatchNorm met fp32 statistics, so every bf16 run failed at its first
    step (first seen on an H200, bench/gpu_train.py)."""
    from flotilla.models.family import MultiTaskModel

    result = train(
        tiny("ds-bf16", epochs=1, backend="deepspeed", deepspeed={"stage": 2, "dtype": "bf16"}, tracking={"wandb": False}),
        hub=hub,
    )
    (model,) = result.models
    assert torch.isfinite(torch.tensor(model.history[0]["train/loss"]))
    assert 0.0 <= model.history[0]["val/gender/accuracy"] <= 1.0
    saved = torch.load(__import__("io").BytesIO(data_repo.get(*parse_lakefs_uri(model.model_uri)[1:])), weights_only=True)
    assert {v.dtype for v in saved["state"].values() if v.is_floating_point()} == {torch.bfloat16}
    served = MultiTaskModel.from_config(saved["config"])  # inference loads into fp32 on CPU
    served.load_state_dict(saved["state"])
    out = served.eval()(torch.randint(0, 255, (4, 64, 64, 3), dtype=torch.uint8))
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())


def test_the_commit_callback_pickles_without_the_keys(hub, data_repo, local_ray):
    """It is pickled to the Train controller: an object-store reference travels, not the secret.

    Used first, so its cached lakeFS client (which holds the secret) exists when it is pickled. (The
    run's ``storage_filesystem``, a pyarrow S3 filesystem, does carry the keys to the controller: see
    docs/architecture.md.)"""
    from flotilla.training.callbacks import HubCommitCallback

    cb = HubCommitCallback(ray.put(hub.credentials), data_repo.name, "main", "family")
    assert cb.repo.resolve("main") == data_repo.resolve("main")
    blob = ray.cloudpickle.dumps(cb)
    assert hub.credentials.secret_access_key.encode() not in blob
    assert ray.cloudpickle.loads(blob).repo.resolve("main") == data_repo.resolve("main")


def test_killed_worker_resumes_from_its_checkpoint(hub, data_repo, local_ray):
    result = train(tiny("chaos", epochs=3, tracking={"wandb": False}), hub=hub, hooks=[KillWorker(rank=1, after_epoch=0)])
    (model,) = result.models
    assert [h["epoch"] for h in model.history] == [0, 1, 2]
    assert model.history[-1]["resumed_from_epoch"] == 0
    log = [c.message for c in data_repo.log(model.branch, 10)]
    failure = next(i for i, m in enumerate(log) if "worker failure" in m)
    assert log.index("family: checkpoint epoch 0") > failure > log.index("family: checkpoint epoch 1")


def test_transfer_learning_loads_the_parent_and_records_it(family, hub, data_repo, local_ray):
    parent = family.models[0].model_uri
    child = train(
        tiny(
            "child",
            epochs=1,
            tasks=["age"],
            transfer={"source": parent, "freeze_backbone_epochs": 1, "load_heads": True},
            tracking={"wandb": False},
        ),
        hub=hub,
    )
    (model,) = child.models
    card = json.loads(data_repo.get(model.commit, f"models/{child.run_id}/family/card.json"))
    assert card["parent"]["uri"] == parent
    load = lambda uri: torch.load(__import__("io").BytesIO(data_repo.get(*parse_lakefs_uri(uri)[1:])), weights_only=True)["state"]
    p, c = load(parent), load(model.model_uri)
    backbone = [k for k in p if k.startswith("backbone.") and "num_batches" not in k]
    assert backbone and all(torch.equal(p[k], c[k]) for k in backbone)  # frozen: identical to the parent
    # the head started as the parent's (load_heads) and trained while the backbone was frozen
    assert p["heads.age.weight"].shape == c["heads.age.weight"].shape
    assert not torch.equal(p["heads.age.weight"], c["heads.age.weight"])
    # a parent of another width is refused on the driver, before a branch or worker exists
    before = set(data_repo.branches())
    with pytest.raises(SpecError, match="backbone does not fit") as err:
        train(tiny("misfit", epochs=1, model={"width": 16}, transfer={"source": parent}, tracking={"wandb": False}), hub=hub)
    assert "same backbone name and width" in err.value.hint
    assert set(data_repo.branches()) == before
    # a source that exists but is not a model (its card, say) is a spec error too, not torch's unpickling advice
    card = parent.rsplit("/", 1)[0] + "/card.json"
    with pytest.raises(SpecError, match="is not a flotilla model checkpoint") as err:
        train(tiny("not-a-model", epochs=1, transfer={"source": card}, tracking={"wandb": False}), hub=hub)
    assert "model.pt" in err.value.hint and "weights_only" not in str(err.value)
    assert set(data_repo.branches()) == before


def test_separate_strategy_trains_one_model_per_task_on_its_own_branch(hub, data_repo, local_ray):
    data_repo.create_branch("sep-into", "main", exist_ok=True)
    result = train(
        tiny("sep", epochs=1, strategy="separate", scaling={"workers": 1}, tracking={"wandb": False}, merge_into="sep-into"),
        hub=hub,
    )
    assert sorted(m.name for m in result.models) == ["age", "emotion", "gender"]
    assert len({m.branch for m in result.models}) == 3
    assert all(m.tasks == [m.name] for m in result.models)
    assert {"age/mae", "gender/auc", "emotion/macro_f1"} <= {k for m in result.models for k in m.metrics}
    # promoted only after all three succeeded, each merge carrying its model commit's provenance
    for m in result.models:
        assert m.merge_commit and data_repo.stat("sep-into", f"models/{result.run_id}/{m.name}/model.pt")
        meta = data_repo.commit_info(m.merge_commit).metadata
        assert meta["flotilla.model"] == m.name and meta["flotilla.data_commit"] == result.data.commit


def test_the_cli_shows_its_own_progress_and_keeps_rays_output_in_the_runs_log(data_repo, local_ray, jobs_env, tmp_path):
    """`flotilla train`: flotilla's epoch lines and result, in a few lines; Ray's output in the run's log."""
    import re

    import yaml
    from typer.testing import CliRunner

    from flotilla.cli import app

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny("cli", epochs=1, tracking={"wandb": False}).model_dump(mode="json")))
    runner = CliRunner()
    out = runner.invoke(app, ["train", str(spec)], env={"COLUMNS": "100"})
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert len(lines) < 30 and "Traceback" not in out.output, out.output
    assert not any(s in out.output for s in ("RayTrainWorker", "TrainController", "Started a local Ray", "wandb:")), out.output
    assert any(line.startswith("family  epoch 1/1  loss ") for line in lines), out.output
    run_id = re.search(r"^run (\S+):", out.output, re.M)[1]
    assert any(line.split("\t")[-1] == f"exp-{run_id}" for line in lines)  # piped: whole branch names, tab-separated
    log = Path(re.search(r"Ray's log: (\S+)", out.output)[1])
    assert log.parent.name == run_id and "(TrainController" in log.read_text()
    # -v (streaming the same log) and --json are tested without training: tests/unit/test_cli_output.py


def test_a_diverged_run_is_refused_and_never_reaches_main(hub, data_repo, local_ray):
    # ages in units of 1e-30 years: the squared error overflows float32 to inf, its gradients make the weights NaN.
    # Such a model used to be published and merged with exit 0 (NaN in its metadata, card.json invalid JSON).
    before = data_repo.resolve("main")
    spec = tiny(
        "diverge",
        tasks=[{"name": "age", "kind": "regression", "label": "age", "loss": "mse", "target_scale": 1e-30}],
        scaling={"workers": 1, "cpus_per_worker": 1},
        merge_into="main",
        tracking={"wandb": False},
    )
    with pytest.raises(DivergedError, match=r"not finite at its chosen epoch .*nothing was published and nothing merged"):
        train(spec, hub=hub)
    assert data_repo.resolve("main") == before
