"""Datasets in the real hub: ingest → gate → merge, the pre-merge hook, commit-pinned cached loading."""

import io
import json

import numpy as np
import pyarrow as pa
import pytest

from flotilla.data import layout
from flotilla.data.api import generate, synthetic_samples
from flotilla.data.gate import install_gate
from flotilla.data.ingest import ingest, validate_and_merge, validation_path
from flotilla.data.loader import HubDataset, commit_key
from flotilla.data.pinning import resolve_data
from flotilla.data.store import read_labels, read_manifest
from flotilla.data.validate import Thresholds
from flotilla.errors import DataValidationError

pytestmark = pytest.mark.integration

SMALL = Thresholds(min_group_count=3)


@pytest.fixture
def faces(hub, repo, tmp_path):
    """A validated synthetic dataset of 480 faces merged into the test repo's main."""
    result = generate(hub, repo.name, "faces", 480, seed=1, thresholds=SMALL, report_dir=tmp_path / "reports")
    return result


def test_install_gate_commits_only_the_hook_and_refuses_a_dirty_branch(hub, repo):
    from flotilla.data.gate import ACTION_PATH
    from flotilla.errors import ConflictError

    repo.put("main", "datasets/sneaky/labels.parquet", b"never validated")  # staged on main, uncommitted
    with pytest.raises(ConflictError) as info:
        install_gate(repo, "main")
    assert "datasets/sneaky/labels.parquet" in info.value.message and "uncommitted" in info.value.message
    assert "commit them" in info.value.hint and "reset them" in info.value.hint
    head = repo.resolve("main")
    assert not repo.exists(head, "datasets/sneaky/labels.parquet")  # nothing ungated was committed
    assert not repo.exists(head, ACTION_PATH)
    repo.delete("main", "datasets/sneaky/labels.parquet")
    before = repo.resolve("main")
    assert install_gate(repo, "main") is True
    head = repo.resolve("main")
    assert repo.exists(head, ACTION_PATH) and not repo.uncommitted("main")
    assert [c.path for c in repo.diff(before, head)] == [ACTION_PATH]  # the hook and nothing else
    assert not [b for b in repo.branches() if b.startswith("gate-install-")]
    assert install_gate(repo, "main") is False and repo.resolve("main") == head


def test_concurrent_gate_installs_all_succeed_and_land_one_hook(hub, repo):
    """Two ingests into a fresh repo both install the gate first; neither may fail nor commit anything else."""
    from concurrent.futures import ThreadPoolExecutor

    from flotilla.data.gate import ACTION_PATH, action_yaml

    before = repo.resolve("main")
    with ThreadPoolExecutor(4) as pool:  # separate Repo handles: separate clients, as separate processes have
        installed = list(pool.map(lambda _: install_gate(hub.repo(repo.name), "main"), range(4)))
    assert any(installed)  # someone installed it; the rest may have merged the same hook (an empty merge) or found it
    head = repo.resolve("main")
    assert repo.get(head, ACTION_PATH) == action_yaml("main").encode()
    assert [c.path for c in repo.diff(before, head)] == [ACTION_PATH]
    assert not repo.uncommitted("main")
    assert not [b for b in repo.branches() if b.startswith("gate-install-")]
    assert install_gate(repo, "main") is False


def test_a_hook_left_staged_by_an_interrupted_install_is_not_taken_for_an_installed_one(hub, repo, tmp_path):
    from flotilla.data.gate import ACTION_PATH, action_yaml
    from flotilla.errors import ConflictError

    repo.put("main", ACTION_PATH, action_yaml("main"))  # the process died between put and commit
    with pytest.raises(ConflictError, match=r"flotilla-data-gate.yaml"):
        install_gate(repo, "main")
    with pytest.raises(ConflictError, match="cannot ingest 'faces' into 'main'"):  # before any data is written
        generate(hub, repo.name, "faces", 60, seed=1, thresholds=SMALL)
    assert not [b for b in repo.branches() if b.startswith("ingest-")]
    repo.delete("main", ACTION_PATH)  # the fix the error names: reset the staged change
    assert install_gate(repo, "main") is True and repo.exists(repo.resolve("main"), ACTION_PATH)


def test_generate_lands_validated_on_main_with_provenance(faces, repo, tmp_path):
    assert faces.passed and faces.merge_commit
    assert faces.branch not in repo.branches()  # ingest branch cleaned up after the merge
    m = read_manifest(repo, "main", "faces")
    assert m.counts["samples"] == 480 and sum(m.counts[s] for s in layout.SPLITS) == 480
    assert m.provenance["source"] == "synthetic" and m.provenance["seed"] == 1
    assert m.label_counts == {"age": 480, "gender": 480, "emotion": 480}
    report = json.loads(repo.get("main", validation_path("faces")))
    shards = {sh.path.split("datasets/faces/")[1] for sh in m.shards}
    assert report["passed"] and set(report["fingerprint"]) == {"labels.parquet", "manifest.json"} | shards
    meta = repo.commit_info(faces.commit).metadata
    assert meta["flotilla.validation"] == "passed" and meta["provenance.source"] == "synthetic"
    assert faces.report_paths["png"].stat().st_size > 1000  # label-distribution plot
    assert json.loads(faces.report_paths["json"].read_text())["passed"] is True


def _defective_samples():
    samples = list(synthetic_samples(300, seed=2))
    samples[0].image = b"\x89PNG\r\n\x1a\nthis is not a png"  # corrupt bytes
    samples[1].age = 150.0  # out of range
    samples[2] = layout.Sample(  # same image as sample 3, conflicting gender
        "dup-conflict", samples[3].image, "png", samples[3].age, 1 - samples[3].gender, samples[3].emotion
    )
    for s in samples:  # 'disgust' almost gone: an under-represented group
        if s.emotion == 1:
            s.emotion = 0
    samples[4].emotion = 1
    return samples


def test_every_injected_defect_is_caught_and_main_is_unchanged(hub, repo, tmp_path):
    install_gate(repo, "main")
    head = repo.resolve("main")
    with pytest.raises(DataValidationError) as info:
        ingest(
            hub,
            repo.name,
            "bad",
            _defective_samples(),
            provenance={"source": "test"},
            thresholds=Thresholds(min_group_count=5),
            report_dir=tmp_path,
        )
    msg = str(info.value)
    assert repo.resolve("main") == head  # main untouched
    assert not repo.exists("main", layout.manifest_path("bad"))
    report = json.loads((tmp_path / "bad-validation.json").read_text())
    found = json.dumps(report)
    for sid in ("syn-2-0000000", "syn-2-0000001", "dup-conflict"):
        assert sid in found, sid
    checks = {i["check"] for i in report["issues"] if i["severity"] == "error"}
    # each injected defect by name: the corrupt image, the out-of-range age, the conflicting duplicate, lone 'disgust'
    assert {"labels.age", "duplicates.conflicting_labels", "representativeness.emotion"} <= checks, checks
    assert any(c.startswith("images.") for c in checks), checks
    lone = [i for i in report["issues"] if i["check"] == "representativeness.emotion"]
    assert any("'disgust'" in json.dumps(i) and "syn-2-0000004" in json.dumps(i) for i in lone), lone
    assert "ingest-bad" in msg and "failed validation" in msg
    # the error itself says which checks failed on which samples, and how to fix each (not just counts)
    assert "dataset 'bad' failed validation" in msg and "labels.age: 1 affected" in msg and "syn-2-0000001" in msg
    assert "images." in msg and "duplicates.conflicting_labels" in msg and "dup-conflict" in msg
    assert "fix or null out the out-of-range labels" in info.value.hint and "--merge" in info.value.hint
    assert info.value.report.name == "bad" and not info.value.report.passed
    kept = [b for b in repo.branches() if b.startswith("ingest-bad")]
    assert kept, "the failed ingest branch is kept for fixing"


def test_pre_merge_hook_refuses_labels_edited_after_validation(faces, hub, repo):
    repo.create_branch("relabel", "main")
    labels = read_labels(repo, "relabel", "faces")
    ages = labels.column("age").to_numpy().copy()
    ages[0] = 999.0  # an edit the gate never saw
    edited = labels.set_column(labels.schema.get_field_index("age"), "age", pa.array(ages, pa.float32()))
    repo.put("relabel", layout.labels_path("faces"), layout.encode_labels(edited))
    repo.commit("relabel", "sneaky label edit")
    head = repo.resolve("main")
    with pytest.raises(DataValidationError) as info:
        repo.merge("relabel", "main")
    assert "changed after validation" in str(info.value)
    assert repo.resolve("main") == head
    with pytest.raises(DataValidationError) as info:  # the gate itself catches the bad age
        validate_and_merge(hub, repo.name, "relabel", "faces", thresholds=SMALL, merge=True)
    assert "dataset 'faces' failed validation" in info.value.message and "labels.age: 1 affected" in info.value.message
    assert "fix or null out the out-of-range labels" in info.value.hint and "--ref relabel" in info.value.hint
    assert info.value.report.name == "faces"
    ages[0] = 33.0  # a legitimate fix
    fixed = labels.set_column(labels.schema.get_field_index("age"), "age", pa.array(ages, pa.float32()))
    repo.put("relabel", layout.labels_path("faces"), layout.encode_labels(fixed))
    repo.commit("relabel", "fix one age")
    report, merged = validate_and_merge(hub, repo.name, "relabel", "faces", thresholds=SMALL, merge=True)
    assert report.passed and repo.resolve("main") == merged


def test_validate_merge_merges_only_the_validated_commit_and_its_receipt(faces, hub, repo, monkeypatch):
    """A write to the branch while the gate runs (another user, a notebook) is not merged under its receipt."""
    import flotilla.data.ingest as ingest_mod

    repo.create_branch("fix", "main")
    labels = read_labels(repo, "fix", "faces")
    genders = labels.column("gender").to_numpy().copy()
    genders[:2] = 1 - genders[:2]
    fixed = labels.set_column(labels.schema.get_field_index("gender"), "gender", pa.array(genders, pa.int16()))
    repo.put("fix", layout.labels_path("faces"), layout.encode_labels(fixed))  # a label fix, staged
    real = ingest_mod.validate_ref

    def validate_while_someone_writes(r, ref, name, thresholds=None):
        report = real(r, ref, name, thresholds)
        r.put("fix", "notes/unvalidated.txt", b"written while the gate ran")  # staged on the branch meanwhile
        return report

    monkeypatch.setattr(ingest_mod, "validate_ref", validate_while_someone_writes)
    report, merged = validate_and_merge(hub, repo.name, "fix", "faces", thresholds=SMALL, merge=True)
    assert report.passed and repo.resolve("main") == merged
    assert not repo.exists("main", "notes/unvalidated.txt")  # not swept into the receipt commit
    assert [c.path for c in repo.uncommitted("fix")] == ["notes/unvalidated.txt"]  # left where it was written
    assert json.loads(repo.get("main", validation_path("faces")))["passed"]
    assert not [b for b in repo.branches() if b.startswith("receipt-")]


def test_pre_merge_hook_refuses_dataset_files_without_a_manifest_but_allows_removing_a_dataset(faces, hub, repo):
    head = repo.resolve("main")
    repo.create_branch("nomanifest", "main")
    repo.put("nomanifest", "datasets/sneaky/labels.parquet", b"never validated")  # a dataset folder, no manifest
    repo.commit("nomanifest", "labels without a manifest")
    with pytest.raises(DataValidationError) as info:
        repo.merge("nomanifest", "main")
    assert "sneaky: files without a manifest.json" in str(info.value) and repo.resolve("main") == head
    repo.create_branch("dropmanifest", "main")
    repo.delete("dropmanifest", layout.manifest_path("faces"))  # the receipt's manifest is gone, the rest stays
    repo.commit("dropmanifest", "remove the manifest only")
    with pytest.raises(DataValidationError, match=r"faces: files without a manifest.json"):
        repo.merge("dropmanifest", "main")
    repo.create_branch("drop", "main")
    repo.delete("drop", [o.path for o in repo.list("drop", "datasets/faces/")])  # removing a whole dataset is fine
    repo.commit("drop", "remove the faces dataset")
    repo.merge("drop", "main")
    assert not repo.list("main", "datasets/faces/")


def test_loader_is_pinned_balanced_across_ranks_and_cached(faces, hub, repo, tmp_path):
    ref = resolve_data(hub, repo.name, "main", "faces")
    ds = HubDataset(ref, hub.credentials, cache_dir=tmp_path / "cache")
    n_train = ds.manifest.counts["train"]
    seen = []
    for b in ds.iter_batches("train", batch_size=64, seed=0):
        assert b["image"].dtype == np.uint8 and b["image"].shape[1:] == (64, 64, 3)
        assert b["mask_age"].all() and b["gender"].max() <= 1
        seen += [int(x) for x in b["age"]]
    assert len(seen) == n_train
    ranks = [sum(len(b["age"]) for b in ds.iter_batches("train", 32, rank=r, world_size=2, epoch=1)) for r in range(2)]
    assert ranks[0] == ranks[1] > 0.45 * n_train  # equal per rank, nothing much dropped
    n_val = ds.manifest.counts["val"]
    w = next(w for w in range(3, 10) if n_val % w)  # a world size the split does not divide
    per_rank = [
        sum(len(b["age"]) for b in ds.iter_batches("val", 16, shuffle=False, rank=r, world_size=w, equal=False)) for r in range(w)
    ]
    assert sum(per_rank) == n_val  # evaluation: every sample on exactly one rank, none dropped
    misses = ds.cache.stats.misses
    list(ds.iter_batches("val", 64, epoch=2))
    # later epochs never re-read the hub nor decode again: each shard was decoded once, into the node cache
    assert ds.cache.stats.misses == misses and ds.decoded_cache.stats.builds == len(ds.manifest.shards)
    # main moves on: the pinned ref still reads the old commit
    repo.put("main", "unrelated.txt", "x")
    repo.commit("main", "unrelated")
    assert HubDataset(ref, hub.credentials, cache_dir=tmp_path / "c2").manifest.counts["samples"] == 480


def test_label_fix_commit_reuses_cached_image_shards(faces, hub, repo, tmp_path):
    cache = tmp_path / "cache"
    first = HubDataset(resolve_data(hub, repo.name, "main", "faces"), hub.credentials, cache_dir=cache)
    list(first.iter_batches("train", 128))
    labels = read_labels(repo, "main", "faces")
    repo.create_branch("fix", "main")
    genders = labels.column("gender").to_numpy().copy()
    genders[:5] = 1 - genders[:5]
    fixed = labels.set_column(labels.schema.get_field_index("gender"), "gender", pa.array(genders, pa.int16()))
    repo.put("fix", layout.labels_path("faces"), layout.encode_labels(fixed))
    repo.commit("fix", "fix 5 gender labels")
    validate_and_merge(hub, repo.name, "fix", "faces", thresholds=SMALL, merge=True)
    second = HubDataset(resolve_data(hub, repo.name, "main", "faces"), hub.credentials, cache_dir=cache)
    assert second.ref.commit != first.ref.commit
    list(second.iter_batches("train", 128))
    shard_bytes = sum(s.bytes for s in second.manifest.shards)
    assert second.cache.stats.bytes_fetched < shard_bytes / 10  # only labels/manifest re-read, no image shard


def test_an_import_that_fails_says_which_entries_it_skipped_and_why(hub, repo, tmp_path):
    """A UTKFace folder whose file names do not parse: 0 images reach the gate; the reason must reach the user."""
    from flotilla.data.api import import_dataset
    from flotilla.errors import FlotillaError

    folder = tmp_path / "utk"
    folder.mkdir()
    for i in range(3):
        (folder / f"face_{i}.jpg").write_bytes(b"not looked at: the name is wrong")
    with pytest.raises(FlotillaError) as err:
        import_dataset(hub, repo.name, "utk", "utkface", folder, thresholds=SMALL)
    assert "3 utkface source entries were skipped" in err.value.message and "face_0.jpg" in err.value.message
    assert not repo.exists("main", layout.manifest_path("utk"))


def test_importers_land_partial_labels_as_nulls(hub, repo, tmp_path):
    from PIL import Image

    rows = ["emotion,pixels,Usage"]
    rng = np.random.default_rng(0)
    for i in range(140):
        usage = "Training" if i % 5 else "PublicTest" if i % 10 else "PrivateTest"  # all three, as the real CSV has
        rows.append(f"{i % 7}," + " ".join(map(str, rng.integers(0, 256, 48 * 48))) + f",{usage}")
    csv = tmp_path / "fer.csv"
    csv.write_text("\n".join(rows) + "\n")
    from flotilla.data.api import import_dataset

    result, problems = import_dataset(hub, repo.name, "fer", "fer2013", csv, thresholds=SMALL)
    assert not problems and result.passed
    m = read_manifest(repo, "main", "fer")
    assert m.label_counts == {"age": 0, "gender": 0, "emotion": 140, "usage": 140}  # Usage kept as a declared column
    ds = HubDataset(resolve_data(hub, repo.name, "main", "fer"), hub.credentials, cache_dir=tmp_path / "c", image_size=64)
    b = next(ds.iter_batches("train", 16))
    assert not b["mask_age"].any() and not b["mask_gender"].any() and b["mask_emotion"].all()
    assert b["image"].shape == (16, 64, 64, 3)
    raw = layout.decode_table(repo.get("main", m.shards[0].path)).column("image")[0].as_py()
    with Image.open(io.BytesIO(raw)) as im:  # stored as 48x48 greyscale PNG, as imported
        assert (im.mode, im.size) == ("L", (48, 48))


def test_a_csv_with_a_stray_quote_is_not_imported_in_part(hub, repo, tmp_path):
    """A stray quote swallows the rest of the file into one field: the first rows alone would pass
    the gate and land on main as a silently partial dataset. The import fails instead, naming the line."""
    from flotilla.data.api import import_dataset
    from flotilla.data.importers import ImportFormatError

    rng = np.random.default_rng(0)
    rows = ["emotion,pixels,Usage"] + [
        f"{i % 7}," + " ".join(map(str, rng.integers(0, 256, 48 * 48))) + ",Training" for i in range(140)
    ]
    rows[101] = rows[101].replace(",", ',"', 1)  # line 102: emotion,"pixels... never closed
    csv = tmp_path / "fer.csv"
    csv.write_text("\n".join(rows) + "\n")
    install_gate(repo, "main")
    head = repo.resolve("main")
    with pytest.raises(ImportFormatError) as info:
        import_dataset(hub, repo.name, "fer", "fer2013", csv, thresholds=SMALL)
    assert "fer.csv is malformed at line 102" in info.value.message and "fix line 102" in info.value.hint
    assert repo.resolve("main") == head and not repo.exists("main", layout.manifest_path("fer"))
    assert not [b for b in repo.branches() if b.startswith("ingest-")]  # nothing half-written survives


def test_an_unwritable_report_dir_fails_cleanly_and_leaves_no_branch(hub, repo, tmp_path):
    from flotilla.errors import ConfigError

    (tmp_path / "afile").write_text("not a folder")
    install_gate(repo, "main")
    head = repo.resolve("main")
    with pytest.raises(ConfigError) as info:  # not a raw NotADirectoryError after the commit
        generate(hub, repo.name, "faces", 60, seed=1, thresholds=SMALL, report_dir=tmp_path / "afile" / "reports")
    assert "cannot write the validation report of dataset 'faces'" in info.value.message
    assert "nothing was ingested" in info.value.message and "--report-dir" in info.value.hint
    assert not [b for b in repo.branches() if b.startswith("ingest-")]  # no orphaned ingest branch
    assert repo.resolve("main") == head


def test_a_shard_replaced_after_ingest_is_caught_by_the_gate_and_by_the_hook(faces, hub, repo):
    manifest = read_manifest(repo, "main", "faces")
    shard = manifest.shards[0].path
    import pyarrow.parquet as pq

    table = layout.decode_table(repo.get("main", shard))
    buf = io.BytesIO()
    pq.write_table(table.slice(0, table.num_rows - 1), buf)  # one image fewer, same manifest
    repo.create_branch("swap", "main")
    repo.put("swap", shard, buf.getvalue())
    repo.commit("swap", "replace an image shard in place")
    head = repo.resolve("main")
    with pytest.raises(DataValidationError) as info:  # the hook: the receipt's checksum for the shard is stale
        repo.merge("swap", "main")
    assert "changed after validation" in str(info.value) and shard.split("faces/")[1] in str(info.value)
    with pytest.raises(DataValidationError) as info:  # the gate: the shard is not what the manifest recorded
        validate_and_merge(hub, repo.name, "swap", "faces", thresholds=SMALL, merge=True)
    assert "is not the one its manifest recorded" in info.value.message and "ingesting them again" in info.value.hint
    assert repo.resolve("main") == head


def test_validate_merge_refuses_to_merge_a_branch_into_itself_or_a_commit(faces, hub, repo):
    with pytest.raises(DataValidationError, match="nothing to merge"):
        validate_and_merge(hub, repo.name, "main", "faces", thresholds=SMALL, merge=True)
    with pytest.raises(DataValidationError, match="is not a branch"):
        validate_and_merge(hub, repo.name, repo.resolve("main"), "faces", thresholds=SMALL, merge=True)
    report, merged = validate_and_merge(hub, repo.name, "main", "faces", thresholds=SMALL)
    assert report.passed and merged is None
    assert report.name == "faces" and report.summary().startswith("dataset 'faces': PASSED")


def test_a_damaged_cache_entry_is_never_served_to_training(hub, repo, tmp_path):
    from flotilla.data.store import write_dataset

    write_dataset(repo, "main", "tiny", synthetic_samples(24, seed=3), {"source": "test"}, shard_rows=12)
    repo.commit("main", "tiny dataset")
    ref = resolve_data(hub, repo.name, "main", "tiny")
    cache = tmp_path / "cache"
    first = HubDataset(ref, hub.credentials, cache_dir=cache)
    shard = first.manifest.shards[0]
    want = first.read_shard(shard)
    # a bad sector / torn write flips a byte in the cached shard, and one in the cached manifest
    for key in (shard.sha256, commit_key(ref, layout.manifest_path("tiny"))):
        p = first.cache.path(key)
        raw = bytearray(p.read_bytes())
        raw[-3] ^= 0x01
        p.write_bytes(bytes(raw))
    second = HubDataset(ref, hub.credentials, cache_dir=cache)
    assert second.manifest.name == "tiny"
    assert second.read_shard(shard).equals(want)
    assert second.cache.stats.corrupt == 2 and second.cache.stats.misses == 2


def test_decoded_batches_are_the_png_loaders_batches_and_shared_by_a_second_reader(hub, repo, tmp_path):
    """Same order, images, labels and masks as decoding PNGs every epoch, for any rank, epoch and batching;
    a second reader on the node (a new trial) maps the decoded shards without the hub or a decode."""
    import dataclasses

    from flotilla.data.store import write_dataset

    # some samples without an age: masks must travel with their rows
    samples = [dataclasses.replace(s, age=None) if i % 7 == 0 else s for i, s in enumerate(synthetic_samples(150, seed=4))]
    write_dataset(repo, "main", "multi", samples, {"source": "test"}, shard_rows=16)  # 10 shards: batches span shards
    repo.commit("main", "a many-shard dataset")
    ref = resolve_data(hub, repo.name, "main", "multi")
    cache = tmp_path / "cache"
    png = HubDataset(ref, hub.credentials, cache_dir=cache, image_size=32, decoded=False)
    dec = HubDataset(ref, hub.credentials, cache_dir=cache, image_size=32, prefetch=3)
    cases = [
        dict(split="train", batch_size=20, seed=3, epoch=1),
        dict(split="train", batch_size=7, seed=3, epoch=2, rank=1, world_size=3, drop_last=True),
        dict(split="val", batch_size=16, shuffle=False, rank=0, world_size=2, equal=False),
    ]
    for kw in cases:
        want, got = list(png.iter_batches(**kw)), list(dec.iter_batches(**kw))
        assert len(want) == len(got) > 0
        for w, g in zip(want, got, strict=True):
            assert list(w) == list(g)
            for k in w:
                assert w[k].dtype == g[k].dtype and np.array_equal(w[k], g[k]), (kw, k)
    assert not all(b["mask_age"].all() for b in dec.iter_batches("train", 20))
    assert dec.decoded_cache.stats.builds == len(dec.manifest.shards) == 10
    second = HubDataset(ref, hub.credentials, cache_dir=cache, image_size=32)
    assert sum(len(b["image"]) for b in second.iter_batches("train", 32)) == second.split_size("train")
    assert second.decoded_cache.stats.builds == 0 and second.decoded_cache.stats.hits == 10
    assert second.cache.stats.bytes_fetched < sum(s.bytes for s in second.manifest.shards) / 10  # no image shard
