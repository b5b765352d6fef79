"""Parallel ingest's pure parts: the same bytes whatever the workers, and the gate's report from shard facts
equal to the one from the shards' bytes."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from flotilla.data import layout
from flotilla.data.imagecheck import ShardFacts
from flotilla.data.shardwork import ShardTask, SyntheticPlan, build_shards, shard_tasks, synthetic_samples
from flotilla.data.validate import Thresholds, validate
from flotilla.errors import ConfigError


def png(seed: int, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_a_synthetic_plan_builds_the_same_bytes_with_one_worker_or_two_and_as_the_sample_stream():
    plan = SyntheticPlan(50, seed=5)
    one = list(build_shards(shard_tasks(plan, 16), workers=1))
    two = list(build_shards(shard_tasks(plan, 16), workers=2))
    streamed = [layout.encode_shard(c) for c in layout.chunked(synthetic_samples(50, seed=5), 16)]
    assert [s.index for s in two] == [0, 1, 2, 3]  # in shard order, whatever finished first
    assert [s.data for s in one] == [s.data for s in two] == streamed
    assert [s.sha256 for s in two] == [hashlib.sha256(d).hexdigest() for d in streamed]
    assert [len(s.rows) for s in two] == [16, 16, 16, 2]
    assert [r.sample_id for s in two for r in s.rows] == [f"syn-5-{i:07d}" for i in range(50)]
    assert all(r.image == b"" and r.age is not None for s in two for r in s.rows)  # labels kept, images dropped
    assert [s.facts for s in one] == [s.facts for s in two]


def test_the_gate_judges_shard_facts_exactly_as_it_judges_the_shards_bytes():
    images = [png(i) for i in range(40)]
    images[3] = images[3][:-30]  # truncated
    images[7] = b"not an image at all"
    images[9] = images[8]  # a duplicate (same labels below: a warning)
    images[11] = png(11, size=20)  # an odd size
    samples = [
        layout.Sample(
            f"s{i:03d}" if i != 13 else " ", img, "jpeg" if i == 15 else "png", age=float(i), gender=i % 2, emotion=i % 7
        )
        for i, img in enumerate(images)
    ]
    samples[9].age, samples[9].gender, samples[9].emotion = samples[8].age, samples[8].gender, samples[8].emotion
    samples[20].age = 400.0  # out of range
    built = list(build_shards(shard_tasks(samples, 12), workers=2))
    labels = layout.labels_table(samples)
    t = Thresholds(min_group_count=1)
    from_facts = validate(labels, [b.facts for b in built], t, name="x")
    from_bytes = validate(labels, [b.data for b in built], t, name="x")
    assert isinstance(built[0].facts, ShardFacts)
    assert from_facts.to_json() == from_bytes.to_json()
    checks = {i.check for i in from_facts.issues}
    assert {"images.truncated", "images.decode", "duplicates.same_labels", "images.size", "images.format_mismatch"} <= checks
    assert {"schema.empty_sample_id", "labels.age"} <= checks and not from_facts.passed


def test_a_worker_error_reaches_the_caller_and_bad_worker_counts_are_refused():
    bad = [ShardTask(i, samples=[layout.Sample(f"s{i}", "not bytes", "png")]) for i in range(3)]  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="encoded before hashing"):  # raised in a worker, re-raised here
        list(build_shards(bad, workers=2))
    with pytest.raises(ConfigError, match="at least 1"):
        list(build_shards(shard_tasks(SyntheticPlan(3), 2), workers=0))
