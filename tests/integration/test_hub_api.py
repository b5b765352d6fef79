"""flotilla.Hub / Repo / Experiment against the session's real lakeFS server."""

import logging
import os
import traceback

import pytest

from flotilla.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    FlotillaError,
    HubError,
    HubUnavailableError,
    InvalidNameError,
    MergeConflictError,
    NotFoundError,
)
from flotilla.hub import Hub, Retention
from flotilla.hub.credentials import HubCredentials

pytestmark = pytest.mark.integration


def _bytes_under(path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_hundred_branches_of_10mb_add_no_data_on_disk(repo, local_server):
    for i in range(10):
        repo.put("main", f"datasets/blob/part-{i:02d}.bin", os.urandom(1 << 20))
    repo.commit("main", "10 MB dataset")
    before = _bytes_under(local_server.block_dir)
    assert before >= 10 << 20
    base = repo.resolve("main")
    for i in range(100):
        repo.create_branch(f"exp-{i:03d}", base)
    after = _bytes_under(local_server.block_dir)
    assert after == before, f"branching wrote {after - before} bytes to the blockstore"
    assert len(repo.branches()) == 101
    assert repo.stat("exp-099", "datasets/blob/part-09.bin").checksum == repo.stat("main", "datasets/blob/part-09.bin").checksum


def test_commits_are_immutable_and_addressable_by_id(repo):
    repo.put("main", "labels.csv", "id,age\n1,30\n")
    first = repo.commit("main", "v1", {"n": 1, "source": "test"})
    repo.put("main", "labels.csv", "id,age\n1,31\n")
    second = repo.commit("main", "v2")
    assert first.metadata == {"n": "1", "source": "test"}  # stringified
    assert repo.get(first.id, "labels.csv") == b"id,age\n1,30\n"
    assert repo.get(second.id, "labels.csv") == b"id,age\n1,31\n"
    assert repo.resolve(first.id) == first.id and repo.resolve("main") == second.id
    assert [c.id for c in repo.log("main", 3)][:2] == [second.id, first.id]
    assert [c.path for c in repo.diff(first.id, second.id)] == ["labels.csv"]
    assert repo.tag("v1", first.id) == first.id and repo.tags()["v1"] == first.id


def test_merge_conflict_raises_and_leaves_destination_untouched(repo):
    repo.put("main", "labels.csv", "base")
    repo.commit("main", "base")
    repo.create_branch("fix-a", "main")
    repo.put("fix-a", "labels.csv", "a")
    repo.commit("fix-a", "a")
    repo.put("main", "labels.csv", "main moved")
    repo.put("main", "other.txt", "untouched")
    head = repo.commit("main", "main moved").id
    with pytest.raises(MergeConflictError) as info:
        repo.merge("fix-a", "main")
    assert info.value.paths == ["labels.csv"] and "labels.csv" in str(info.value)
    assert repo.resolve("main") == head and repo.get("main", "labels.csv") == b"main moved"
    merged = repo.merge("fix-a", "main", strategy="source-wins")
    assert repo.get(merged, "labels.csv") == b"a"


def test_experiment_commits_merges_and_applies_retention(repo):
    repo.put("main", "data.txt", "d")
    repo.commit("main", "data")
    with repo.experiment("lr=3e-4 / bs 64", merge_into="main", metadata={"lr": 3e-4}) as exp:
        pinned = exp.base_commit
        repo.put("main", "late.txt", "main moved after the experiment started")
        repo.commit("main", "moved")
        assert not repo.exists(exp.branch, "late.txt")  # pinned to the base commit
        exp.put("models/m.pt", b"weights")
    commit = repo.commit_info(exp.commit_id)
    assert commit.metadata["flotilla.base_commit"] == pinned and commit.metadata["lr"] == "0.0003"
    assert repo.get("main", "models/m.pt") == b"weights"
    assert exp.branch in repo.branches()  # kept by default

    with repo.experiment("short lived", merge_into="main", retention=Retention(on_success="delete")) as exp2:
        exp2.put("x.txt", "x")
    assert exp2.branch not in repo.branches() and repo.exists("main", "x.txt")


def test_failed_experiment_is_deleted_and_main_unchanged(repo):
    repo.put("main", "data.txt", "d")
    head = repo.commit("main", "data").id
    with pytest.raises(RuntimeError):
        with repo.experiment("doomed", merge_into="main") as exp:
            exp.put("half.txt", "half-written")
            raise RuntimeError("training crashed")
    assert exp.branch not in repo.branches() and repo.resolve("main") == head
    with pytest.raises(RuntimeError):
        with repo.experiment("kept", retention=Retention(on_failure="keep")) as kept:
            kept.put("debug.txt", "look at me")
            raise RuntimeError("boom")
    assert kept.branch in repo.branches()


def test_experiment_merge_conflict_leaves_main_untouched(repo):
    repo.put("main", "labels.csv", "base")
    repo.commit("main", "base")
    with pytest.raises(MergeConflictError) as err:
        with repo.experiment("clash", merge_into="main") as exp:
            exp.put("labels.csv", "experiment")
            repo.put("main", "labels.csv", "main")
            repo.commit("main", "concurrent change")
    assert repo.get("main", "labels.csv") == b"main"
    # the experiment's committed work is not thrown away: its branch stays, for resolving the conflict
    assert exp.branch in repo.branches() and repo.get(exp.branch, "labels.csv") == b"experiment"
    assert err.value.paths == ["labels.csv"] and exp.branch in err.value.hint


def test_bad_names_and_unknown_refs_give_our_errors(hub, repo):
    with pytest.raises(InvalidNameError, match="lowercase"):
        hub.repo("Bad_Repo")
    with pytest.raises(InvalidNameError, match="letters, digits"):
        repo.create_branch("bad/branch")
    with pytest.raises(InvalidNameError):
        repo.put("main", "../escape.txt", "x")
    with pytest.raises(NotFoundError) as info:
        repo.resolve("no-such-branch")
    assert "main" in str(info.value)  # tells what exists
    with pytest.raises(NotFoundError, match="existing repositories"):
        hub.repo("no-such-repo").branches()
    with pytest.raises(NotFoundError) as info:  # a ref in a repository that does not exist (data.repo: facez)
        hub.repo("no-such-repo").resolve("main")
    assert "repository not found" in info.value.message and repo.name in info.value.hint
    with pytest.raises(NotFoundError):
        repo.create_branch("x", "no-such-source")
    repo.create_branch("dup")
    with pytest.raises(ConflictError, match="already exists"):
        repo.create_branch("dup")


def test_stopped_server_gives_hub_unavailable(hub_settings):
    from flotilla.hub.server import free_port

    dead = Hub(credentials=HubCredentials(f"http://127.0.0.1:{free_port()}", "AKIAX", "secret"), settings=hub_settings)
    with pytest.raises(HubUnavailableError, match="flotilla hub up"):
        dead.repo("faces").resolve("main")


def test_no_credential_leaks_into_logs_errors_or_metadata(hub, repo, local_server, caplog, capsys):
    creds = local_server.credentials()
    caplog.set_level(logging.DEBUG)
    texts = [repr(hub), str(hub.credentials), repr(hub.credentials)]
    bad = Hub(
        credentials=HubCredentials(hub.endpoint, creds.access_key_id, "wrong-" + creds.secret_access_key), settings=hub.settings
    )
    for action in (
        lambda: bad.repo(repo.name).resolve("main"),
        lambda: repo.resolve("nope"),
        lambda: repo.commit("main", "leak", {"cfg": {"key": creds.secret_access_key}}),
    ):
        with pytest.raises(FlotillaError) as info:
            action()
        texts.append(str(info.value))
        texts.append("".join(traceback.format_exception(info.value)))
    assert isinstance(info.value, ConfigError)  # metadata carrying the secret is refused
    out = capsys.readouterr()
    texts += [caplog.text, out.out, out.err]
    for t in texts:
        assert creds.secret_access_key not in t
        assert creds.access_key_id not in t  # not a secret, but flotilla keeps it out of its own output too
    # lakeFS's own log may name the key id of a failed login (an identifier, like a user name), never the secret
    assert creds.secret_access_key not in local_server.log_path.read_text(errors="replace")


def test_an_empty_commit_or_merge_says_there_is_nothing_new_not_that_a_name_is_bad(repo):
    from flotilla.errors import HubError

    repo.put("main", "a.txt", "a")
    repo.commit("main", "a")
    repo.create_branch("same", "main")
    for attempt in (lambda: repo.commit("main", "nothing"), lambda: repo.merge("same", "main")):
        with pytest.raises(HubError) as err:
            attempt()
        assert not isinstance(err.value, InvalidNameError) and "nothing new" in err.value.hint, err.value


def test_experiment_keeps_its_committed_branch_when_the_destination_is_dirty(repo):
    from flotilla.errors import HubError

    repo.put("main", "base.txt", "base")
    repo.commit("main", "base")
    with pytest.raises(HubError) as err:
        with repo.experiment("dirty-dest", merge_into="main") as exp:
            exp.put("models/age/model.pt", "weights")
            repo.put("main", "wip.txt", "someone's uncommitted change")  # lakeFS refuses to merge into a dirty branch
    assert exp.branch in repo.branches() and repo.get(exp.branch, "models/age/model.pt") == b"weights"
    assert exp.commit_id and exp.branch in str(err.value) and f"repo.merge({exp.branch!r}, 'main')" in err.value.hint
    assert "uncommitted" in err.value.hint  # what to do about the destination (see _translate)
    repo.commit("main", "the wip")  # the named retry works
    assert repo.merge(exp.branch, "main") and repo.get("main", "models/age/model.pt") == b"weights"


def test_experiment_keeps_its_committed_branch_when_the_data_gate_refuses(repo):
    from flotilla.data.gate import install_gate
    from flotilla.errors import DataValidationError

    install_gate(repo, "main")
    with pytest.raises(DataValidationError) as err:
        with repo.experiment("unvalidated", merge_into="main", retention=Retention(on_failure="delete")) as exp:
            exp.put("datasets/faces/manifest.json", "{}")  # a dataset (the gate looks for its manifest) ...
            exp.put("datasets/faces/labels.parquet", "not validated")  # ... with no validation report
    assert exp.branch in repo.branches() and not exp.deleted
    assert repo.get(exp.branch, "datasets/faces/labels.parquet") == b"not validated"
    assert exp.branch in str(err.value) and "validate --merge" in err.value.hint
    assert not repo.exists("main", "datasets/faces/labels.parquet")


def test_http_400s_are_told_apart_by_lakefs_message(hub, repo):
    from flotilla.errors import HubError
    from flotilla.hub._translate import translate

    repo.put("main", "a.txt", "a")
    repo.commit("main", "a")
    repo.create_branch("feature", "main")
    repo.put("feature", "b.txt", "b")
    repo.commit("feature", "b")
    repo.put("main", "wip.txt", "uncommitted")
    with pytest.raises(ConflictError, match="dirty branch") as dirty:  # lakeFS: "uncommitted changes (dirty branch)"
        repo.merge("feature", "main")
    assert "commit them" in dirty.value.hint and not isinstance(dirty.value, InvalidNameError)
    with pytest.raises(ConflictError, match="namespace already in use") as ns:
        hub.ensure_repo(repo.name + "-x", storage_namespace=f"local://{repo.name}")
    assert "storage_namespace" in ns.value.hint
    with pytest.raises(InvalidNameError, match="branch id") as name:  # the server's own name check still names it
        with translate("create a branch", hub.endpoint):
            repo._sdk.branch("bad.name").create("main")
    assert "branch_id" in name.value.hint
    repo.commit("main", "wip")  # clean again, so the next 400s are about nothing else
    unknown = [  # lakeFS 400s that are not about a name: the general error, quoting lakeFS
        lambda: repo._sdk.ref("main").object("a.txt").stat(pre_sign=True),  # the local blockstore does not presign
        lambda: repo._sdk.ref("feature").merge_into("main", strategy="nonsense"),  # "argument strategy: invalid value"
    ]
    for call in unknown:
        with pytest.raises(HubError) as other:
            with translate("do it", hub.endpoint):
                call()
        assert type(other.value) is HubError and "HTTP 400" in str(other.value) and other.value.hint


def test_the_secret_key_is_refused_in_metadata_keys_and_messages_without_being_echoed(repo, local_server):
    secret = local_server.credentials().secret_access_key
    repo.create_branch("feature", "main")
    repo.put("feature", "b.txt", "b")
    repo.commit("feature", "b")
    repo.put("feature", "c.txt", "c")
    main_before = repo.resolve("main")
    attempts = {
        "metadata key": lambda: repo.commit("feature", "c", {f"aws_secret={secret}": "1"}),
        "commit message": lambda: repo.commit("feature", f"trained with --secret {secret}"),
        "merge message": lambda: repo.merge("feature", "main", f"merge (key {secret})"),
    }
    for what, attempt in attempts.items():
        with pytest.raises(ConfigError, match="secret key") as err:
            attempt()
        assert secret not in str(err.value) + "".join(traceback.format_exception(err.value)), what
    assert repo.uncommitted("feature") and repo.resolve("main") == main_before  # nothing reached history
    assert all(secret not in c.message and secret not in str(c.metadata) for c in repo.log("feature"))


def test_experiment_keeps_work_committed_on_its_branch_by_hand_when_the_merge_fails(repo):
    from flotilla.errors import HubError

    repo.put("main", "base2.txt", "base")
    repo.commit("main", "base")
    with pytest.raises(HubError) as err:
        with repo.experiment("by-hand", merge_into="main") as exp:
            exp.put("models/x/model.pt", "weights")
            repo.commit(exp.branch, "committed by hand, not through exp.commit()")
            repo.put("main", "wip2.txt", "someone's uncommitted change")  # the merge is refused: dirty destination
    assert exp.commit_id is None and exp.branch in repo.branches(), "committed work was deleted with its branch"
    assert repo.get(exp.branch, "models/x/model.pt") == b"weights" and exp.branch in str(err.value)
    repo.commit("main", "the wip")


def test_deleting_the_default_branch_is_refused_by_the_hub_not_blamed_on_the_credentials(repo):
    # lakeFS answers 403 for an operation no key may do; it used to read "the hub rejected the credentials"
    with pytest.raises(HubError, match="does not allow it") as info:
        repo.delete_branch("main")
    assert not isinstance(info.value, AuthError) and "credentials" not in str(info.value)
