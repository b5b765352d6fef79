import random
import string

import pytest

from flotilla.errors import InvalidNameError
from flotilla.names import BRANCH_RE, branch_id, check_branch_id, check_object_path, check_repo_id, safe_local_path


@pytest.mark.parametrize(
    "name",
    [
        "lr=3e-4/bs 64",
        "train_fn_1a2b_00003",
        "Ünïcødé naïve",
        "a..b",
        "-leading",
        "x" * 300,
        "a/b",
        "a-b",
        "tab\there",
        "a--0123456789ab",
    ],
)
def test_branch_id_is_valid_and_deterministic(name):
    bid = branch_id(name)
    assert BRANCH_RE.match(bid) and len(bid) <= 96
    assert branch_id(name) == bid
    assert check_branch_id(bid) == bid


def test_valid_names_are_kept_verbatim_and_prefixed():
    assert branch_id("trial_00003") == "trial_00003"
    assert branch_id("lr-1", prefix="exp-") == "exp-lr-1"


def test_branch_ids_never_collide_on_near_miss_names():
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits + "-_/. =:"
    names = {"a/b", "a-b", "a b", "a.b", "a_b", "A/b", "a//b"}
    names |= {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(5000)}
    names = {n for n in names if n.strip()}
    ids = {branch_id(n) for n in names}
    assert len(ids) == len(names)


def test_a_name_that_looks_hashed_is_hashed_again_so_families_stay_disjoint():
    hashed = branch_id("a/b")
    assert hashed.startswith("a-b--")
    assert branch_id(hashed) != hashed


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "-x", "ü", "a.b"])
def test_bad_branch_ids_name_the_rule(bad):
    with pytest.raises(InvalidNameError, match="letters, digits"):
        check_branch_id(bad)


@pytest.mark.parametrize("bad", ["ab", "Faces", "fa_ces", "-faces", "x" * 64, "fa ces"])
def test_bad_repo_ids_name_the_rule(bad):
    with pytest.raises(InvalidNameError, match="lowercase"):
        check_repo_id(bad)


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/../../b", "/abs", "a//b", "a\\b", "a/./b", "x\x00y", "..", ""])
def test_object_paths_reject_traversal(bad):
    with pytest.raises(InvalidNameError):
        check_object_path(bad)


def test_safe_local_path_stays_under_root():
    assert str(safe_local_path("/cache", "datasets/faces/shard-0.parquet")) == "/cache/datasets/faces/shard-0.parquet"
    with pytest.raises(InvalidNameError):
        safe_local_path("/cache", "../../etc/passwd")


def test_dataset_names_are_one_folder_and_every_dataset_path_checks_them():
    from flotilla.data import layout
    from flotilla.names import check_dataset_name

    for ok in ("synthetic", "faces-2026-11", "utk_face.v2"):
        assert check_dataset_name(ok) == ok and layout.labels_path(ok) == f"datasets/{ok}/labels.parquet"
    for bad in ("a/b", "..", "x/../y", "", "-lead", "sp ace", "a" * 101):
        with pytest.raises(InvalidNameError, match="invalid dataset name"):
            check_dataset_name(bad)
    for path in (layout.dataset_prefix, layout.labels_path, layout.manifest_path, lambda n: layout.shard_path(n, 0)):
        with pytest.raises(InvalidNameError):
            path("nested/set")


@pytest.mark.parametrize("tail", ["\n", "\r\n"])
def test_a_trailing_newline_is_not_part_of_a_valid_name(tail):
    from flotilla.names import check_dataset_name

    # '$' matches before a final '\n': "main\n" used to pass as a branch id, and reach lakeFS or a path
    for check, ok in ((check_branch_id, "main"), (check_repo_id, "faces"), (check_dataset_name, "synthetic")):
        with pytest.raises(InvalidNameError):
            check(ok + tail)
    assert branch_id("main" + tail) != "main" + tail and check_branch_id(branch_id("main" + tail))
