"""Two label fixes of one dataset racing to main, against a real lakeFS: both land, or the second hears who won.

Fixes made with :func:`flotilla.data.relabel` are deltas: run at the same moment on different samples both land;
on the same sample the second is told which sample. A fix made by hand on a branch (the labels table rewritten,
then ``flotilla data validate --merge``) rewrites the one labels table, so two of them cut from the same main
cannot both land. The second used to hear that its *receipt* commit conflicted and to be advised
``strategy='source-wins'``, which would have undone the first fix; it must hear that another change landed
first on main and to redo its fix there. In every case main holds exactly the fixes that landed and no
scratch branch is left.
"""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from flotilla.data import generate, read_labels, relabel
from flotilla.data.ingest import validate_and_merge
from flotilla.data.layout import encode_labels, labels_path
from flotilla.data.report import Thresholds
from flotilla.errors import ConflictError

pytestmark = pytest.mark.integration

SMALL = Thresholds(min_group_count=3)


@pytest.fixture
def faces(hub, repo):
    return generate(hub, repo.name, "faces", 240, seed=2, thresholds=SMALL)


def _scratch(repo) -> list[str]:
    return [b for b in repo.branches() if b.startswith(("relabel-", "receipt-"))]


def _fix_by_hand(repo, branch: str, row: int, age: float) -> None:
    """What a user does on a branch: read the labels table, change one age, write the table back, commit."""
    repo.create_branch(branch, "main")
    labels = read_labels(repo, branch, "faces")
    ages = labels.column("age").to_pylist()
    ages[row] = age
    i = labels.schema.get_field_index("age")
    field = labels.schema.field(i)
    repo.put(branch, labels_path("faces"), encode_labels(labels.set_column(i, field, pa.array(ages, field.type))))
    repo.commit(branch, f"fix age of row {row}")


def _at_once(*calls):
    """Run the calls in threads released together; each one's result or the exception it raised."""
    start, out = threading.Barrier(len(calls)), [None] * len(calls)

    def run(k):
        start.wait()
        try:
            out[k] = calls[k]()
        except Exception as exc:
            out[k] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_the_second_of_two_hand_fixes_hears_that_the_first_landed_first(faces, hub, repo):
    _fix_by_hand(repo, "fix-a", 0, 11.0)
    _fix_by_hand(repo, "fix-b", 1, 22.0)  # cut from the same main, before fix-a lands
    _, first = validate_and_merge(hub, repo.name, "fix-a", "faces", merge=True)
    with pytest.raises(ConflictError) as caught:
        validate_and_merge(hub, repo.name, "fix-b", "faces", merge=True)
    err = caught.value
    assert "another change to dataset 'faces' landed on 'main' first" in err.message
    assert "'fix age of row 0'" in err.message and "datasets/faces/labels.parquet" in err.message
    assert "the change on 'fix-b'" in err.message.lower() and "'main' was not changed" in err.message
    assert "receipt" not in str(err) and "source-wins" not in str(err)  # no advice the hook or the data refuses
    assert "relabel again" in (err.hint or "") and "--ref <that branch> --dataset faces --merge" in (err.hint or "")
    assert repo.resolve("main") == first and not _scratch(repo)
    ages = read_labels(repo, "main", "faces").column("age").to_pylist()
    assert ages[0] == 11.0 and ages[1] != 22.0


def test_two_relabels_at_once_both_land_unless_they_touch_the_same_sample(faces, hub, repo):
    ids = read_labels(repo, "main", "faces").column("sample_id").to_pylist()
    a, b = _at_once(
        lambda: relabel(hub, repo.name, "faces", {ids[0]: {"age": 31}}),
        lambda: relabel(hub, repo.name, "faces", {ids[1]: {"age": 32}}),
    )
    assert not isinstance(a, Exception) and not isinstance(b, Exception), (a, b)
    assert repo.resolve("main") in (a.merge_commit, b.merge_commit)
    assert read_labels(repo, "main", "faces").column("age").to_pylist()[:2] == [31, 32]
    head = repo.resolve("main")
    results = _at_once(
        lambda: relabel(hub, repo.name, "faces", {ids[5]: {"age": 41}}),
        lambda: relabel(hub, repo.name, "faces", {ids[5]: {"age": 42}}),
    )
    won = [k for k, r in enumerate(results) if not isinstance(r, Exception)]
    assert len(won) == 1, results
    lost = results[1 - won[0]]
    assert isinstance(lost, ConflictError), results
    assert f"were changed on 'main' after this change was cut from it: {ids[5]!r}" in lost.message
    assert "source-wins" not in str(lost) and "receipt" not in str(lost)
    assert repo.commit_info(repo.resolve("main")).parents[0] == head  # exactly one merge landed: the winner's
    assert read_labels(repo, "main", "faces").column("age").to_pylist()[5] == 41 + won[0]
    assert not _scratch(repo)
