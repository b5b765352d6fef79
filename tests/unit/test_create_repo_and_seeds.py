"""What is refused before the hub is touched (issue 22, item 9): bad counts and seeds; and how a missing
repository is reported (named, a guess at the one meant, the list, the flag)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flotilla.cli import app
from flotilla.data import generate
from flotilla.data.ingest import CREATE_REPO_HINT
from flotilla.data.shardwork import SyntheticPlan
from flotilla.data.synthetic import MAX_SEED, check_request
from flotilla.errors import SpecError
from flotilla.hub.client import missing_repo_message
from flotilla.jobs.specs import IngestJob, parse_job_spec


class _Untouchable:
    """A hub that fails any use: a check that passes it proves the refusal came first."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the hub was used ({name}) before the request was checked")


@pytest.mark.parametrize(
    ("n", "seed", "says"),
    [
        (-3, 0, "n: -3"),
        (0, 0, "n: 0"),
        (True, 0, "n: True"),
        (2.5, 0, "n: 2.5"),
        ("10", 0, "n: '10'"),
        (10, -1, "seed: -1"),
        (10, 2**32, f"seed: {2**32}"),
        (10, 99999999999999999999, "seed: 99999999999999999999"),
        (10, False, "seed: False"),
        (10, 1.0, "seed: 1.0"),
    ],
)
def test_bad_counts_and_seeds_are_refused_before_the_hub(n, seed, says):
    with pytest.raises(SpecError, match="nothing was written") as caught:
        generate(_Untouchable(), "faces", "faces", n, seed=seed)
    assert says in str(caught.value)
    with pytest.raises(SpecError):
        SyntheticPlan(n, seed)


def test_every_problem_at_once_and_the_edges_of_the_range_pass():
    with pytest.raises(SpecError) as caught:
        check_request(-3, -1)
    assert [p.split(":")[0] for p in caught.value.problems] == ["n", "seed"]
    check_request(1, 0)
    check_request(1, MAX_SEED)
    assert MAX_SEED == 2**32 - 1


def test_a_missing_repository_is_named_with_a_guess_and_the_list():
    said = missing_repo_message("facse", ["faces", "other"], "http://127.0.0.1:8770")
    assert said.startswith("repository 'facse' does not exist on the hub at http://127.0.0.1:8770")
    assert "(did you mean 'faces'?)" in said and said.endswith("existing repositories: faces, other")
    far = missing_repo_message("zzz-qqq", ["faces"], "http://h")
    assert "did you mean" not in far and far.endswith("existing repositories: faces")
    assert missing_repo_message("faces", [], "http://h").endswith("existing repositories: (none)")
    assert "--create-repo" in CREATE_REPO_HINT and "create_repo=True" in CREATE_REPO_HINT


def test_an_ingest_job_asks_for_a_new_repository_and_keeps_seeds_in_range():
    base = {"kind": "ingest", "name": "x", "repo": "faces-two", "synthetic": {"n": 10}}
    job = parse_job_spec(base)
    assert isinstance(job, IngestJob) and job.create_repo is False
    assert parse_job_spec({**base, "create_repo": True}).create_repo is True
    for seed in (-1, 2**32):
        with pytest.raises(SpecError, match="seed"):
            parse_job_spec({**base, "synthetic": {"n": 10, "seed": seed}})


@pytest.mark.parametrize(
    ("seed", "says"), [("-1", "greater than or equal to 0"), ("4294967296", "less than or equal to 4294967295")]
)
def test_data_generate_refuses_a_seed_out_of_range(monkeypatch, seed, says):
    import flotilla.cli.data

    monkeypatch.setattr(flotilla.cli.data, "Hub", _Untouchable)
    result = CliRunner().invoke(app, ["data", "generate", "--seed", seed], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '--seed': Input should be {says}" in " ".join(result.output.split())


def test_al_select_refuses_a_seed_out_of_range(monkeypatch):
    import flotilla.cli.al

    monkeypatch.setattr(flotilla.cli.al, "Hub", _Untouchable)
    args = ["al", "select", "m@production", "--pool", "faces/main/pool", "--budget", "5", "--name", "x", "--seed", "-1"]
    bad = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert bad.exit_code == 2 and "Invalid value for '--seed'" in " ".join(bad.output.split()), bad.output
