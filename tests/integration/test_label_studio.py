"""flotilla's local Label Studio against the real server: one start for the module, on a free port in a temp home.

The server is real (its own virtualenv, provisioned by ``flotilla label install`` / ``make label-studio``);
nothing of Label Studio is mocked. The tests run in file order: the last one stops the server.
"""

from __future__ import annotations

import stat

import psutil
import pytest

from flotilla.errors import (
    LabelStudioAuthError,
    LabelStudioError,
    LabelStudioNotFoundError,
    LabelStudioUnavailableError,
)
from flotilla.hub.server import free_port
from flotilla.labelstudio import LABEL_STUDIO_VERSION, LabelStudioClient, LabelStudioServer, ensure_installed, local_client
from flotilla.settings import Settings

pytestmark = pytest.mark.integration

LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="gender" toName="image"><Choice value="female"/><Choice value="male"/></Choices>
  <Number name="age" toName="image" min="0" max="120"/>
</View>"""


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("label-home")
    return Settings(home=home, cache=Settings.from_env().cache, label_port=free_port())


@pytest.fixture(scope="module")
def server(settings: Settings):
    srv = LabelStudioServer(settings.label_dir, settings.label_port, ensure_installed(settings), LABEL_STUDIO_VERSION)
    srv.up(timeout=240)
    yield srv
    srv.down()


def _choice(name: str, value: str) -> dict:
    return {"from_name": name, "to_name": "image", "type": "choices", "value": {"choices": [value]}}


def _number(name: str, value: float) -> dict:
    return {"from_name": name, "to_name": "image", "type": "number", "value": {"number": value}}


def test_up_is_healthy_and_its_private_token_works(server: LabelStudioServer, settings: Settings) -> None:
    st = server.status()
    assert st.running and st.healthy and st.version == LABEL_STUDIO_VERSION
    assert st.url == f"http://127.0.0.1:{settings.label_port}"
    assert server.up().pid == st.pid  # idempotent: no second process

    assert stat.S_IMODE(server.credentials_path.stat().st_mode) == 0o600
    creds = server.credentials()
    assert len(creds.token) == 40
    assert creds.token not in repr(creds) + str(creds) and creds.password not in repr(creds) + str(creds)
    ls = local_client(settings)
    assert ls.whoami()["email"] == creds.username
    assert ls.projects() == []
    assert creds.token not in repr(ls)
    assert creds.token not in server.log_path.read_text()


def test_it_listens_on_loopback_only(server: LabelStudioServer, settings: Settings) -> None:
    pid = server.status().pid
    assert pid is not None
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    listening = [c.laddr for p in procs for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening, "Label Studio listens on nothing"
    assert {a.ip for a in listening} == {"127.0.0.1"}
    assert {a.port for a in listening} == {settings.label_port}


def test_a_wrong_token_is_refused_with_the_fix(server: LabelStudioServer) -> None:
    wrong = LabelStudioClient(server.url, "0" * 40, credentials_path=server.credentials_path)
    with pytest.raises(LabelStudioAuthError, match="flotilla label down") as info:
        wrong.projects()
    assert str(server.credentials_path) in str(info.value) and "0" * 40 not in str(info.value)


def test_a_busy_port_is_refused_before_anything_starts(server: LabelStudioServer, tmp_path) -> None:
    other = LabelStudioServer(tmp_path / "label-studio", server.port, server.executable)  # the running one holds it
    with pytest.raises(LabelStudioError, match=f"port {server.port}.*already in use") as info:
        other.up(timeout=30)
    assert "FLOTILLA_LABEL_PORT" in str(info.value)
    assert not other.pid_path.exists() and not other.log_path.exists() and not other.data_dir.exists()


def test_project_tasks_annotation_export_round_trip(server: LabelStudioServer, settings: Settings) -> None:
    ls = local_client(settings)
    project = ls.ensure_project("al round 1", LABEL_CONFIG)
    assert ls.ensure_project("al round 1", LABEL_CONFIG) == project  # a rerun reuses it
    prediction = {"model_version": "m-1", "score": 0.25, "result": [_choice("gender", "male"), _number("age", 30)]}
    ids = ls.import_tasks(
        project.id,
        [
            {"data": {"image": "s3://faces/main/a.png"}, "meta": {"sample_id": "a"}, "predictions": [prediction]},
            {"data": {"image": "s3://faces/main/b.png"}, "meta": {"sample_id": "b"}},
        ],
    )
    tasks = {t.id: t for t in ls.tasks(project.id)}
    assert sorted(tasks) == sorted(ids)
    assert [tasks[i].meta["sample_id"] for i in ids] == ["a", "b"]

    annotation = ls.annotate(ids[0], [_choice("gender", "female"), _number("age", 34)])
    assert annotation.task == ids[0]
    assert ls.task(ids[0]).total_annotations == 1

    exported = {t["id"]: t for t in ls.export(project.id)}
    assert set(exported) == set(ids)
    first = exported[ids[0]]
    assert first["meta"] == {"sample_id": "a"}
    (ann,) = first["annotations"]
    assert {r["from_name"]: r["value"] for r in ann["result"]} == {"gender": {"choices": ["female"]}, "age": {"number": 34}}
    assert exported[ids[1]]["annotations"] == []

    ls.delete_task(ids[1])
    with pytest.raises(LabelStudioNotFoundError, match=f"task {ids[1]}"):
        ls.task(ids[1])
    with pytest.raises(LabelStudioNotFoundError, match=f"task {ids[1]}"):
        ls.annotate(ids[1], [_choice("gender", "male")])
    assert [t.id for t in ls.tasks(project.id)] == [ids[0]]


def test_s3_storage_over_the_hubs_gateway_proxies_the_image_bytes(server: LabelStudioServer, settings, hub, repo) -> None:
    """What a round's tasks rely on: ``s3://<repo>/<ref>/...`` resolves through lakeFS's S3 gateway at 127.0.0.1."""
    repo.put("main", "images/a.png", b"\x89PNG not really")
    repo.commit("main", "one image")
    ls = local_client(settings)
    project = ls.ensure_project("al s3 round", LABEL_CONFIG)
    keys = hub.credentials
    common = {"title": "lakefs", "endpoint": keys.endpoint, "bucket": repo.name, "prefix": "main/images"}
    with pytest.raises(LabelStudioError, match="could not list") as info:
        ls.create_s3_storage(project.id, **common, access_key_id=keys.access_key_id, secret_access_key="wrong-secret-x1")
    assert "wrong-secret-x1" not in str(info.value) and "wrong-secret-x1" not in server.log_path.read_text()

    storage = ls.create_s3_storage(
        project.id, **common, access_key_id=keys.access_key_id, secret_access_key=keys.secret_access_key
    )
    assert ls.s3_storages(project.id) == [storage]
    ls.sync_s3_storage(storage.id)
    (task_id,) = ls.import_tasks(project.id, [{"data": {"image": f"s3://{repo.name}/main/images/a.png"}}])
    url = ls.task(task_id).data["image"]
    assert url.startswith(f"/tasks/{task_id}/resolve/")  # proxied by Label Studio (presign off), not a lakeFS URL
    assert ls.read_file(url) == b"\x89PNG not really"
    assert keys.secret_access_key not in server.log_path.read_text()


def test_down_stops_it_and_the_client_says_how_to_start_it(server: LabelStudioServer, settings: Settings) -> None:
    pid = server.status().pid
    assert "gracefully" in server.down()
    st = server.status()
    assert not st.running and not st.healthy
    assert pid is not None and not psutil.pid_exists(pid)
    with pytest.raises(LabelStudioUnavailableError, match="flotilla label up"):
        local_client(settings).projects()
    assert server.down() == "Label Studio was not running"
