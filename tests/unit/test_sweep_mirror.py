"""The pure logic of sweeps resumable from anywhere (tune/mirror.py): change detection, object keys
kept inside the sweep folder, the lease, the study that follows its folder, and the ``resume:`` job."""

import os
import pickle
import socket
import sqlite3
import time

import pytest

from flotilla.errors import ConfigError, ConflictError, InvalidNameError, SpecError
from flotilla.hub.branches import kind_of_branch
from flotilla.jobs.specs import SweepJob, parse_job_spec
from flotilla.tune import mirror
from flotilla.tune.mirror import Holder, changed, check_lease, key_to_path, local_files, mirror_branch, snapshot_study


def test_only_new_or_changed_files_are_pushed():
    pushed = {"a": (1, 10), "b": (2, 20)}
    assert changed({"a": (1, 10), "b": (2, 21), "c": (3, 30)}, pushed) == ["b", "c"]
    assert changed({"a": (1, 10)}, pushed) == []
    assert changed({"a": (5, 10)}, pushed) == ["a"]  # same mtime, another size


def test_local_files_leave_out_wandb_the_console_log_temporary_files_and_big_ones(tmp_path):
    for rel, size in {
        "sweep.json": 3,
        "optuna.db": 4,
        "optuna.db-journal": 4,
        "ray.log": 5,
        "tune/s/experiment_state-1.json": 6,
        "tune/s/.abc-tmp-searcher-state.pkl": 1,
        "tune/s/searcher-state-1.pkl.tmp-99": 1,
        "wandb/run-1/files/x.wandb": 7,
        "tune/s/wandb/kept.txt": 2,  # only the folder's own wandb/ is W&B's
        "big.bin": 100,
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * size)
    files, big = local_files(tmp_path, cap=50)
    assert sorted(files) == ["optuna.db", "sweep.json", "tune/s/experiment_state-1.json", "tune/s/wandb/kept.txt"]
    assert big == ["big.bin"]
    assert files["sweep.json"][0] == 3


@pytest.mark.parametrize(
    "key", ["_sweep/../x", "_sweep/a/../../x", "/_sweep/x", "_sweep/a\\b", "other/x", "_sweep/", "_sweep//x"]
)
def test_a_mirror_key_that_would_leave_the_sweep_folder_is_refused(tmp_path, key):
    with pytest.raises((ConfigError, InvalidNameError)):
        key_to_path(key, tmp_path / "sweeps" / "s")


def test_a_mirror_key_maps_inside_the_sweep_folder(tmp_path):
    d = tmp_path / "s"
    assert key_to_path("_sweep/tune/s/tuner.pkl", d) == (d / "tune" / "s" / "tuner.pkl").resolve()


def test_the_mirror_branch_is_a_flotilla_branch_kind_never_confused_with_a_trial():
    assert mirror_branch("demo-20261207-120000-ab12") == "sweep-demo-20261207-120000-ab12"
    assert kind_of_branch(mirror_branch("s")) == "sweep"
    assert kind_of_branch("trial-s-0123abcd") == "trial"


def test_a_lease_from_another_host_is_fresh_until_its_heartbeat_is_old():
    now = time.time()
    other = Holder("elsewhere.example", "/home/a/.flotilla", 123, now - 10)
    me = Holder.me(mirror.Path("/tmp/home-b"))
    with pytest.raises(ConflictError) as err:
        check_lease(other, me, "s", force=False, now=now)
    assert "elsewhere.example" in err.value.message and "/home/a/.flotilla" in err.value.message
    assert "--force" in err.value.hint
    check_lease(other, me, "s", force=True, now=now)  # taken over on purpose
    check_lease(Holder("elsewhere.example", "/h", 123, now - mirror.LEASE_TTL_S - 1), me, "s", force=False, now=now)
    check_lease(None, me, "s", force=False, now=now)


def test_a_lease_on_this_host_is_fresh_only_while_its_process_runs():
    now = time.time()
    alive = Holder(socket.gethostname(), "/h", os.getpid(), now)
    assert alive.fresh(now)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert not Holder(socket.gethostname(), "/h", pid, now).fresh(now), "a killed driver's lease holds nobody off"
    check_lease(alive, Holder(socket.gethostname(), "/h", os.getpid(), now), "s", force=False, now=now)  # my own


def test_the_study_snapshot_is_a_whole_database(tmp_path):
    db = tmp_path / "optuna.db"
    con = sqlite3.connect(db)
    con.execute("create table t (x int)")
    con.executemany("insert into t values (?)", [(i,) for i in range(1000)])
    con.commit()
    con.execute("insert into t values (-1)")  # an open write transaction is not in the snapshot
    snapshot_study(db, tmp_path / "copy.db")
    con.rollback()
    con.close()
    assert sqlite3.connect(tmp_path / "copy.db").execute("select count(*) from t").fetchone() == (1000,)


def test_an_unpickled_study_storage_opens_the_study_where_the_resuming_driver_says(tmp_path):
    import optuna

    from flotilla.tune.searcher import SweepStudyStorage, open_study_at

    a, b = tmp_path / "home-a.db", tmp_path / "home-b.db"
    optuna.create_study(study_name="moved", storage=SweepStudyStorage(a, "moved")).optimize(
        lambda t: t.suggest_float("x", 0, 1), 2
    )
    blob = pickle.dumps(SweepStudyStorage(a, "moved"))
    a.rename(b)  # the folder moved (pulled into another home), the old path gone
    open_study_at("moved", b)
    storage = pickle.loads(blob)
    assert storage.url == f"sqlite:///{b}" and not a.exists()
    assert len(optuna.load_study(study_name="moved", storage=storage).trials) == 2


def test_a_sweep_job_resumes_by_id_and_names_exactly_one_sweep():
    job = parse_job_spec({"kind": "sweep", "name": "again", "resume": "demo-20261207-120000-ab12", "repo": "faces"})
    assert isinstance(job, SweepJob) and job.resume == "demo-20261207-120000-ab12" and job.repo == "faces"
    for bad, says in (
        ({"resume": "s", "spec": "tuning/demo.yaml"}, "exactly one"),
        ({"resume": "../s"}, "resume"),
        ({"resume": "s", "repo": "No_Such"}, "repo"),
        ({"spec": "tuning/demo.yaml", "repo": "faces"}, "with 'resume' only"),
        ({"resume": "s", "overrides": {"budget.trials": 2}}, "overrides"),
    ):
        with pytest.raises(SpecError) as err:
            parse_job_spec({"kind": "sweep", "name": "x", **bad})
        assert says in str(err.value.problems) + err.value.message, (bad, err.value.problems)


def test_a_resume_job_pins_nothing_it_runs_what_the_sweep_pinned_when_it_started():
    from flotilla.jobs.submission import pin_job

    job = parse_job_spec({"kind": "sweep", "name": "again", "resume": "s1"})
    pinned, lineage = pin_job(job, hub=object())  # no hub call: a resume job reads no ref
    assert pinned == job and lineage == {"sweep_id": "s1"}


def test_a_push_while_the_hub_is_down_warns_once_and_never_fails_the_sweep(tmp_path, caplog):
    from types import SimpleNamespace

    from flotilla.errors import HubUnavailableError
    from flotilla.hub.repo import Repo

    class DownRepo(Repo):
        """The real interface, every call refused as an unreachable hub refuses it."""

        def create_branch(self, branch, source="main", *, exist_ok=False):
            raise HubUnavailableError("the hub at http://127.0.0.1:1 is not answering")

    d = tmp_path / "sweeps" / "s"
    d.mkdir(parents=True)
    (d / "sweep.json").write_text("{}")
    m = mirror.Mirror(DownRepo(SimpleNamespace(), "faces"), "s", d, tmp_path, "c0ffee")
    with caplog.at_level("WARNING", logger="flotilla.tune.mirror"):
        m.try_push()
        m.try_push()
    warned = [r for r in caplog.records if "could not mirror" in r.getMessage()]
    assert len(warned) == 1 and "not answering" in warned[0].getMessage()


def test_the_mirror_never_holds_an_experiment_state_newer_than_the_searcher_state_beside_it(tmp_path):
    """Tune 2.60 writes its experiment state, then its searcher state. A push that lands between the two must
    not send the new experiment state (a trial the searcher never heard of: a KeyError in Tune on resume)."""
    from types import SimpleNamespace

    from flotilla.hub.repo import ObjectInfo, Repo

    d = tmp_path / "sweeps" / "s"
    exp = d / "tune" / "s"
    exp.mkdir(parents=True)
    state, searcher = exp / "experiment_state-S1.json", exp / "searcher-state-S1.pkl"
    uploads: dict[str, bytes] = {}

    class RecordingRepo(Repo):
        def create_branch(self, branch, source="main", *, exist_ok=False):
            return branch

        def exists(self, ref, path):
            return False

        def put(self, branch, path, data):
            uploads[path] = data if isinstance(data, bytes) else data.encode()
            return ObjectInfo(path, 0, "", 0)

    def save(v: str, *, searcher_too: bool = True) -> None:  # as TuneController.save_to_dir: state, then searcher
        state.write_text(f"experiment {v}")
        time.sleep(0.01)
        if searcher_too:
            searcher.write_text(f"searcher {v}")

    m = mirror.Mirror(RecordingRepo(SimpleNamespace(), "faces"), "s", d, tmp_path, "c0ffee")
    save("v1")
    m.push()
    assert uploads["_sweep/tune/s/experiment_state-S1.json"] == b"experiment v1"
    assert uploads["_sweep/tune/s/searcher-state-S1.pkl"] == b"searcher v1"
    save("v2", searcher_too=False)  # the push lands in the middle of Tune's save
    m.push()
    assert uploads["_sweep/tune/s/experiment_state-S1.json"] == b"experiment v1", "an experiment state ahead of its searcher"
    searcher.write_text("searcher v2")  # the save completes
    m.push()
    assert uploads["_sweep/tune/s/experiment_state-S1.json"] == b"experiment v2"
    assert uploads["_sweep/tune/s/searcher-state-S1.pkl"] == b"searcher v2"
    assert mirror.is_experiment_state("tune/s/experiment_state-S1.json") and not mirror.is_experiment_state("sweep.json")
