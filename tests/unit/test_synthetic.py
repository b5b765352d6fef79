"""Tests for the procedural synthetic face generator (flotilla.data.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest

from flotilla.data.synthetic import (
    EMOTIONS,
    GENDERS,
    FaceBatch,
    FaceSpec,
    Shift,
    generate,
    iter_batches,
    render,
    sample_labels,
    sample_params,
)
from flotilla.errors import SpecError

N = 64  # people per "same identity, one label changed" comparison


def _f(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32)


def _region(img: np.ndarray, r0: float, r1: float, c0: float, c1: float) -> np.ndarray:
    h, w = img.shape[1:3]
    return img[:, int(r0 * h) : int(r1 * h), int(c0 * w) : int(c1 * w)]


def _diff(a: np.ndarray, b: np.ndarray, *box: float) -> float:
    """Mean absolute pixel difference (0..255) inside a fractional box."""
    return float(np.abs(_region(_f(a), *box) - _region(_f(b), *box)).mean())


# --------------------------------------------------------------------------- shapes and ranges
@pytest.mark.parametrize("size", [32, 64])
def test_shapes_dtypes_and_ranges(size: int) -> None:
    b = generate(40, seed=1, spec=FaceSpec(size=size), start=5)
    assert isinstance(b, FaceBatch) and len(b) == 40
    assert b.images.shape == (40, size, size, 3) and b.images.dtype == np.uint8
    assert b.images.flags["C_CONTIGUOUS"]
    assert b.age.dtype == np.float32 and b.gender.dtype == np.int8 and b.emotion.dtype == np.int8
    assert b.index.dtype == np.int64 and (b.index == np.arange(5, 45)).all()
    assert ((b.age >= 1.0) & (b.age <= 90.0)).all()
    assert set(np.unique(b.gender)) <= {0, 1} and len(GENDERS) == 2
    assert ((b.emotion >= 0) & (b.emotion < len(EMOTIONS))).all() and len(EMOTIONS) == 7
    for key in ("skin_tone", "brightness", "rotation", "scale", "occluded", "expression_intensity"):
        assert b.nuisance[key].shape[0] == 40, key
    assert b.images.std() > 20  # not blank


def test_empty_batch() -> None:
    b = generate(0, seed=1)
    assert b.images.shape == (0, 64, 64, 3) and len(b.age) == 0


# --------------------------------------------------------------------------- determinism
def test_determinism_across_batch_boundaries() -> None:
    whole = generate(100, seed=3)
    parts = [generate(40, seed=3), generate(60, seed=3, start=40)]
    for name in ("images", "age", "gender", "emotion", "index"):
        joined = np.concatenate([getattr(p, name) for p in parts])
        assert np.array_equal(getattr(whole, name), joined), name
    streamed = list(iter_batches(100, seed=3, batch_size=33))
    assert [len(b) for b in streamed] == [33, 33, 33, 1]
    assert np.array_equal(np.concatenate([b.images for b in streamed]), whole.images)


def test_chunk_size_never_changes_pixels() -> None:
    spec = FaceSpec(shift=Shift(occlusion=0.5, noise=0.05, lighting=0.3))
    p = sample_params(50, seed=9, spec=spec)
    assert np.array_equal(render(p, 64, chunk=7), render(p, 64, chunk=50))


def test_seeds_differ_and_repeat() -> None:
    a, b = generate(8, seed=0), generate(8, seed=1)
    assert not np.array_equal(a.images, b.images)
    assert np.array_equal(a.images, generate(8, seed=0).images)


def test_sample_labels_match_generate() -> None:
    spec = FaceSpec(gender_p_male=0.3)
    labels = sample_labels(30, seed=4, spec=spec, start=7)
    b = generate(30, seed=4, spec=spec, start=7)
    for k in ("age", "gender", "emotion", "index"):
        assert np.array_equal(labels[k], getattr(b, k)), k


# --------------------------------------------------------------------------- label distributions
def test_label_distributions_follow_spec() -> None:
    n = 4000
    ref = sample_labels(n, seed=0)
    assert abs(ref["gender"].mean() - 0.5) < 0.04
    assert abs(ref["age"].mean() - 45.5) < 2.0
    counts = np.bincount(ref["emotion"], minlength=7) / n
    assert np.all(np.abs(counts - 1 / 7) < 0.03)

    assert abs(sample_labels(n, 0, FaceSpec(gender_p_male=0.2))["gender"].mean() - 0.2) < 0.05
    happy = sample_labels(n, 0, FaceSpec(emotion_p=(0, 0, 0, 1, 0, 0, 0)))["emotion"]
    assert (happy == EMOTIONS.index("happy")).all()
    mostly = sample_labels(n, 0, FaceSpec(emotion_p=(0.94, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01)))
    assert abs((mostly["emotion"] == 0).mean() - 0.94) < 0.02

    old = sample_labels(n, 0, FaceSpec(age_range=(0, 80), age_weights=(0, 0, 0, 1)))["age"]
    assert old.min() >= 60 and old.max() <= 80
    young = sample_labels(n, 0, FaceSpec(age_range=(0, 80), age_weights=(3, 1)))["age"]
    assert abs((young < 40).mean() - 0.75) < 0.03


def test_nuisances_independent_of_labels() -> None:
    p = sample_params(6000, seed=2)
    male = p["gender"] == 1
    smiling = p["emotion"] == EMOTIONS.index("happy")
    for key in ("skin_tone", "brightness", "scale", "rotation", "noise_std"):
        spread = p[key].std()
        assert abs(p[key][male].mean() - p[key][~male].mean()) < 0.1 * spread, key
        assert abs(p[key][smiling].mean() - p[key][~smiling].mean()) < 0.15 * spread, key
    assert np.corrcoef(p["age"], p["brightness"])[0, 1] ** 2 < 0.01


# --------------------------------------------------------------------------- labels change pixels
_TOP, _MOUTH, _CORNER = (0.0, 0.12, 0.3, 0.7), (0.6, 0.85, 0.35, 0.65), (0.0, 0.15, 0.0, 0.15)


def _same_people(**overrides: object) -> np.ndarray:
    base = {"expression_intensity": 1.0}
    return generate(N, seed=21, overrides={**base, **overrides}).images


@pytest.mark.parametrize("emotion", [e for e in EMOTIONS if e != "neutral"])
def test_each_emotion_changes_the_face_not_the_rest(emotion: str) -> None:
    neutral = _same_people(emotion=EMOTIONS.index("neutral"))
    other = _same_people(emotion=EMOTIONS.index(emotion))
    face = _diff(neutral, other, 0.3, 0.85, 0.25, 0.75)
    assert face > 2.0, (emotion, face)
    assert _diff(neutral, other, *_CORNER) == 0.0  # background untouched
    assert face > 5 * _diff(neutral, other, *_TOP)  # hair region barely touched


def test_mouth_emotions_change_the_mouth_region_most() -> None:
    neutral = _same_people(emotion=EMOTIONS.index("neutral"))
    for emotion in ("happy", "surprise", "fear"):
        other = _same_people(emotion=EMOTIONS.index(emotion))
        assert _diff(neutral, other, *_MOUTH) > 3.0
        assert _diff(neutral, other, *_MOUTH) > 2 * _diff(neutral, other, 0.0, 0.3, 0.0, 1.0)


def test_intensity_scales_the_expression() -> None:
    neutral = _same_people(emotion=6)
    weak = _same_people(emotion=5, expression_intensity=0.25)
    strong = _same_people(emotion=5, expression_intensity=1.0)
    assert _diff(neutral, strong, *_MOUTH) > 1.5 * _diff(neutral, weak, *_MOUTH)


def _saturation(img: np.ndarray) -> np.ndarray:
    f = _f(img)
    return f.max(axis=-1) - f.min(axis=-1)


def test_age_greys_hair_and_changes_proportions() -> None:
    young, old = _same_people(age=25.0), _same_people(age=85.0)
    assert _diff(young, old, *_TOP) > 5.0  # hair colour
    top_y, top_o = _region(young, 0.0, 0.3, 0.2, 0.8), _region(old, 0.0, 0.3, 0.2, 0.8)
    hair = np.abs(_f(top_y) - _f(top_o)).sum(-1) > 30  # pixels whose colour changed: hair
    assert hair.mean() > 0.1
    assert _saturation(top_o)[hair].mean() < 0.6 * _saturation(top_y)[hair].mean()  # grey
    child = _same_people(age=3.0)
    assert _diff(child, young, 0.2, 0.9, 0.2, 0.8) > 8.0  # smaller, rounder face


def test_gender_changes_hair_and_jaw() -> None:
    female, male = _same_people(gender=0), _same_people(gender=1)
    beside_face = _diff(female, male, 0.45, 0.95, 0.05, 0.3) + _diff(female, male, 0.45, 0.95, 0.7, 0.95)
    assert beside_face > 10.0  # long hair falling beside the face
    assert _diff(female, male, *_CORNER) < beside_face / 4
    labels = generate(2000, seed=5)
    long_hair = labels.nuisance["long_hair"].astype(bool)
    p_long_f, p_long_m = long_hair[labels.gender == 0].mean(), long_hair[labels.gender == 1].mean()
    assert 0.75 < p_long_f < 0.95 and 0.04 < p_long_m < 0.2  # probabilistic, not a rule


def test_overrides_validate_keys() -> None:
    with pytest.raises(ValueError, match="overrides"):
        generate(2, overrides={"nope": 1})


# --------------------------------------------------------------------------- shift
def test_shift_changes_images_not_labels() -> None:
    n = 120
    ref = generate(n, seed=8)
    shifts = (Shift(lighting=0.8), Shift(lighting=-0.8), Shift(occlusion=1.0), Shift(noise=0.2))
    for shift in shifts:
        b = generate(n, seed=8, spec=FaceSpec(shift=shift))
        for k in ("age", "gender", "emotion"):
            assert np.array_equal(getattr(b, k), getattr(ref, k)), (shift, k)
    bright = generate(n, seed=8, spec=FaceSpec(shift=Shift(lighting=0.8))).images.mean()
    dark = generate(n, seed=8, spec=FaceSpec(shift=Shift(lighting=-0.8))).images.mean()
    assert bright > ref.images.mean() + 15 and dark < ref.images.mean() - 15

    occ = generate(n, seed=8, spec=FaceSpec(shift=Shift(occlusion=1.0)))
    assert occ.nuisance["occluded"].all() and not ref.nuisance["occluded"].any()
    assert _diff(occ.images, ref.images, 0.3, 0.9, 0.25, 0.75) > 10.0
    assert _diff(occ.images, ref.images, *_CORNER) == 0.0
    types = occ.nuisance["occlusion_type"]
    assert 0.3 < types.mean() < 0.7  # both sunglasses and masks

    noisy = generate(n, seed=8, spec=FaceSpec(shift=Shift(noise=0.2))).images
    resid = _f(noisy) - _f(ref.images)
    assert resid.std() > 25 and abs(resid.mean()) < 8


def test_age_mix_shifts_ages_only() -> None:
    ref = sample_labels(3000, seed=6)
    mixed = sample_labels(3000, seed=6, spec=FaceSpec(shift=Shift(age_mix=1.0)))
    assert mixed["age"].min() >= 1 + 0.6 * 89 - 1e-3
    assert np.array_equal(mixed["gender"], ref["gender"])
    assert np.array_equal(mixed["emotion"], ref["emotion"])
    half = sample_labels(3000, seed=6, spec=FaceSpec(shift=Shift(age_mix=0.5)))["age"]
    assert ref["age"].mean() < half.mean() < mixed["age"].mean()


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"size": 16}, "size"),
        ({"size": 64.0}, "size"),
        ({"age_range": (50, 10)}, "age_range"),
        ({"age_range": (-5, 10)}, "age_range"),
        ({"age_weights": (1, -1)}, "age_weights"),
        ({"age_weights": ()}, "age_weights"),
        ({"age_weights": (0, 0)}, "age_weights"),
        ({"gender_p_male": 1.5}, "gender_p_male"),
        ({"gender_p_male": float("nan")}, "gender_p_male"),
        ({"emotion_p": (1, 1)}, "emotion_p"),
        ({"emotion_p": (0,) * 7}, "emotion_p"),
        ({"shift": "none"}, "shift"),
    ],
)
def test_bad_facespec_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(SpecError, match=field):
        FaceSpec(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lighting": 2.0}, "lighting"),
        ({"age_mix": -0.1}, "age_mix"),
        ({"occlusion": 1.5}, "occlusion"),
        ({"noise": float("inf")}, "noise"),
    ],
)
def test_bad_shift_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(SpecError, match=field):
        Shift(**kwargs)


def test_spec_is_hashable_and_normalised() -> None:
    spec = FaceSpec(age_weights=[1, 2], emotion_p=[1] * 7, age_range=[0, 50])
    assert spec.age_weights == (1.0, 2.0) and spec.age_range == (0.0, 50.0)
    assert hash(spec) == hash(FaceSpec(age_weights=(1, 2), emotion_p=(1,) * 7, age_range=(0, 50)))
