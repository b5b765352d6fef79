"""A repository is created only when asked, against a real lakeFS (issue 22, item 9).

``--repo facse`` (a typo for ``faces``) used to create a new, empty repository and ingest into it. Now a named
repository must exist: the error names it, guesses the one meant, lists those there are and gives the flag,
and the hub is left as it was (no repository, no branch, main unchanged). ``--create-repo`` /
``create_repo=True`` creates one. The default repository (``faces``) is still created on first use, so
``flotilla data generate`` on a fresh hub (the quickstart, ``make demo``) works as before. Bad ``n`` and seeds
are refused before any branch is cut.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flotilla.cli import app
from flotilla.data import generate, import_dataset
from flotilla.data.report import Thresholds
from flotilla.errors import NotFoundError, SpecError
from flotilla.hub import Hub, LocalHub
from flotilla.jobs.entrypoint import run_ingest
from flotilla.jobs.specs import parse_job_spec
from flotilla.settings import DEFAULT_REPO

pytestmark = pytest.mark.integration

SMALL = Thresholds(representativeness="warning")  # 60 faces: too few to judge groups


def _typo(name: str) -> str:
    """Two neighbouring letters swapped, as 'facse' for 'faces': the last two that differ (a random name may end
    in two alike, and swapping those would give the name itself)."""
    i = max(k for k in range(len(name) - 1) if name[k] != name[k + 1])
    return name[:i] + name[i + 1] + name[i] + name[i + 2 :]


def test_a_named_repository_that_does_not_exist_is_an_error_not_a_new_repository(hub, repo, tmp_path):
    generate(hub, repo.name, "faces", 60, seed=1, thresholds=SMALL)
    head, before = repo.resolve("main"), sorted(hub.repos())
    typo = _typo(repo.name)
    for call in (
        lambda: generate(hub, typo, "faces", 60, seed=1, thresholds=SMALL),
        lambda: import_dataset(hub, typo, "utk", "utkface", tmp_path / "not-read"),  # refused before the files are read
    ):
        with pytest.raises(NotFoundError) as caught:
            call()
        err = caught.value
        assert f"repository {typo!r} does not exist" in err.message and f"(did you mean {repo.name!r}?)" in err.message
        assert f"existing repositories: {', '.join(before)}" in err.message
        assert "--create-repo" in (err.hint or "") and "create_repo=True" in (err.hint or "")
    assert sorted(hub.repos()) == before and repo.resolve("main") == head and repo.branches() == ["main"]


def test_create_repo_creates_the_named_repository_and_ingests_into_it(hub, repo):
    name = f"{repo.name}-new"
    try:
        result = generate(hub, name, "faces", 60, seed=1, thresholds=SMALL, create_repo=True)
        assert name in hub.repos() and hub.repo(name).resolve("main") == result.merge_commit
    finally:
        if name in hub.repos():
            hub.delete_repo(name)


@pytest.mark.parametrize(
    ("n", "seed", "says"),
    [(-3, 0, "n: -3 is not a number of images"), (0, 0, "n: 0"), (10, -1, "seed: -1"), (10, 2**32, "seed: 4294967296")],
)
def test_bad_n_or_seed_is_refused_before_any_branch(hub, repo, n, seed, says):
    head = repo.resolve("main")
    with pytest.raises(SpecError, match="nothing was written") as caught:
        generate(hub, repo.name, "faces", n, seed=seed)
    assert says in str(caught.value)
    assert repo.branches() == ["main"] and repo.resolve("main") == head


def test_the_default_repository_is_created_on_first_use_and_a_typo_is_not(isolated_settings, lakefs_binary, tmp_path):
    settings = isolated_settings()
    server = LocalHub(settings.hub_dir, settings.hub_port, lakefs_binary)
    server.up(timeout=60)
    try:
        env = {"COLUMNS": "300", "FLOTILLA_HOME": str(settings.home), "FLOTILLA_HUB_PORT": str(settings.hub_port)}

        def cli(*args: str, code: int) -> str:
            out = CliRunner().invoke(app, ["data", "generate", "--n", "60", "--allow-underrepresented", *args], env=env)
            assert out.exit_code == code and "Traceback" not in out.output, out.output
            return " ".join(out.output.split())

        cli("--report-dir", str(tmp_path / "r1"), code=0)  # a fresh hub, no --repo: the default repository
        hub = Hub(credentials=server.credentials(), settings=settings)
        assert hub.repos() == [DEFAULT_REPO]
        said = cli("--repo", "facse", code=1)
        assert "repository 'facse' does not exist" in said and "(did you mean 'faces'?)" in said
        assert "existing repositories: faces" in said and "--create-repo" in said
        assert hub.repos() == [DEFAULT_REPO]
        for seed, shown in (("-1", "greater than or equal to 0"), ("99999999999999999999", "less than or equal to 4294967295")):
            assert f"Invalid value for '--seed': Input should be {shown}" in cli("--seed", seed, code=2)
        cli("--repo", "faces-two", "--create-repo", "--report-dir", str(tmp_path / "r2"), code=0)
        assert sorted(hub.repos()) == [DEFAULT_REPO, "faces-two"]
        assert [b for r in hub.repos() for b in hub.repo(r).branches()] == ["main", "main"]
    finally:
        server.down()


def test_an_ingest_job_creates_a_repository_only_with_create_repo(hub, hub_settings, repo, monkeypatch):
    monkeypatch.setenv("FLOTILLA_HOME", str(hub_settings.home))
    monkeypatch.setenv("FLOTILLA_HUB_PORT", str(hub_settings.hub_port))
    name, before = f"{repo.name}-job", sorted(hub.repos())
    spec = {"kind": "ingest", "name": "x", "repo": name, "synthetic": {"n": 60}, "thresholds": {"representativeness": "warning"}}
    with pytest.raises(NotFoundError, match=f"repository {name!r} does not exist"):
        run_ingest(parse_job_spec(spec))
    assert sorted(hub.repos()) == before
    try:
        result = run_ingest(parse_job_spec({**spec, "create_repo": True}))
        assert hub.repo(name).resolve("main") == result["merge_commit"]
    finally:
        if name in hub.repos():
            hub.delete_repo(name)
