"""Procedural synthetic faces: the platform's embedded default dataset.

No real face dataset can be downloaded where the platform runs, yet the demo
trains three face tasks (age regression, gender, 7-class emotion). These
images make every label *visibly and learnably* change the picture, with
overlap and subtle cases so that the tasks are not trivial:

* age: face proportions (children: rounder, smaller face, bigger eyes, lower
  eye line), nasolabial folds and eye bags from adulthood, forehead lines,
  crow's feet, blotchy skin and greying hair with old age, receding hair;
* gender: hair length (probabilistic, ~14% of women short-haired, ~12% of men
  long-haired), jaw width/squareness, brow thickness, beards, lipstick;
* emotion: brow height/angle, eye openness, mouth curve/opening/width, teeth,
  frown lines, nose wrinkles, a one-sided raised lip (disgust), each scaled by
  a per-sample ``expression_intensity`` so that some faces are subtle.

Nuisances (pose, scale, lighting, background, skin tone, clothes, pixel
noise) are drawn independently of the labels; :class:`Shift` moves them (or
the age distribution) for drift experiments.

Determinism: sample ``i`` depends only on ``(seed, i, spec)`` because every
random number is a counter-based hash of ``(seed, i, stream)``; batch
boundaries and chunk sizes never matter.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from flotilla.data import _draw
from flotilla.data._draw import normal, uniforms
from flotilla.data.config import Config, Number, Whole
from flotilla.errors import SpecError, brief

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
GENDERS: tuple[str, ...] = ("female", "male")
LABELS: tuple[str, ...] = ("age", "gender", "emotion")
# One seed range everywhere (data generation, training's ``seed``, a sweep's ``searcher.seed``): what numpy's
# np.random.seed takes. The generator's own hash would fold any integer modulo 2**64, so -1 and 2**64 - 1
# would silently draw the same faces; a seed valid for one command is valid for every other.
MAX_SEED = 2**32 - 1


def check_request(n: object, seed: object) -> None:
    """Refuse a request for synthetic faces that cannot be what the caller meant, before anything is written.

    ``n`` below 1 would ingest an empty dataset; a seed outside 0..:data:`MAX_SEED` (or a bool, a float)
    would alias another seed. One SpecError names every problem.
    """
    problems = []
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        problems.append(f"n: {brief(n)} is not a number of images (a whole number, at least 1)")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        problems.append(f"seed: {brief(seed)} is not a seed (a whole number from 0 to {MAX_SEED}, i.e. 2**32 - 1)")
    if problems:
        raise SpecError("invalid request for synthetic faces; nothing was written:", problems)


def _check(cond: bool, name: str, allowed: str, value: object) -> None:
    if not cond:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


class Shift(Config):
    """Distribution shift for drift experiments; all zero = the reference distribution.

    Only ``age_mix`` changes the labels; the other knobs change the images of
    the very same labelled people, so label-conditional drift can be isolated.
    """

    lighting: Number = Field(default=0.0, ge=-1, le=1)  # darker/brighter plus a stronger directional light
    age_mix: Number = Field(default=0.0, ge=0, le=1)  # share of people drawn from the oldest 40% of age_range
    occlusion: Number = Field(default=0.0, ge=0, le=1)  # probability of sunglasses or a face mask (never in reference)
    noise: Number = Field(default=0.0, ge=0, le=1)  # extra pixel-noise std, in units of full intensity


class FaceSpec(Config):
    """What to generate: image size, label distributions and shift.

    Validated eagerly so that a bad config fails at construction with the
    offending field named, not deep inside a training job. The same class is an
    ingest job's ``synthetic.spec`` (:mod:`flotilla.jobs.specs`).
    """

    size: Whole = Field(default=64, ge=32, le=1024)  # square images
    age_range: tuple[Number, Number] = (1.0, 90.0)  # years, within [0, 120]
    age_weights: tuple[Number, ...] | None = None  # equal-width age bands' weights (None: uniform)
    gender_p_male: Number = Field(default=0.5, ge=0, le=1)
    emotion_p: tuple[Number, ...] | None = None  # 7 probabilities, EMOTIONS order (None: uniform)
    shift: Shift = Shift()

    @field_validator("age_range")
    @classmethod
    def _ordered(cls, ar: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= ar[0] < ar[1] <= 120:
            raise ValueError(f"must be (low, high) with 0 <= low < high <= 120, got {ar}")
        return ar

    @field_validator("age_weights", "emotion_p")
    @classmethod
    def _weights(cls, w: tuple[float, ...] | None, info: ValidationInfo) -> tuple[float, ...] | None:
        n = len(EMOTIONS) if info.field_name == "emotion_p" else None
        if w is not None and not ((n is None or len(w) == n) and w and min(w) >= 0 and sum(w) > 0):
            raise ValueError(f"must be {n or 'one or more'} non-negative numbers with a positive sum, got {w}")
        return w


DEFAULT_SPEC = FaceSpec()


@dataclass(frozen=True, eq=False)
class FaceBatch:
    """Images plus ground truth; ``nuisance`` lets tests and oracles see every latent."""

    images: np.ndarray  # uint8 [n, size, size, 3], RGB, C-contiguous
    age: np.ndarray  # float32 [n], years
    gender: np.ndarray  # int8 [n], index into GENDERS
    emotion: np.ndarray  # int8 [n], index into EMOTIONS
    index: np.ndarray  # int64 [n], global sample indices
    nuisance: dict[str, np.ndarray]  # per-sample latents (pose, lighting, hair, occlusion, ...)

    def __len__(self) -> int:
        return len(self.index)


# Stream ids: append only, never reorder (that would change every dataset).
_STREAMS: tuple[str, ...] = (
    "age_band",
    "age_pos",
    "age_mix",
    "gender",
    "emotion",
    "intensity",
    "rest_curve_a",
    "rest_curve_b",
    "rest_brow_a",
    "rest_brow_b",
    "eye_person",
    "disgust_side",
    "gaze_x",
    "gaze_y",
    "head_w",
    "head_h",
    "jaw_a",
    "jaw_b",
    "brow_th",
    "eye_size",
    "eye_sp",
    "mouth_w",
    "nose_w",
    "skin_tone",
    "hair_base",
    "hair_tint",
    "grey_a",
    "grey_b",
    "long_hair",
    "hair_len",
    "fringe",
    "fringe_phase",
    "bald",
    "bald_amount",
    "beard",
    "beard_density",
    "hair_volume",
    "eye_colour",
    "lipstick",
    "eyeliner",
    "cloth_r",
    "cloth_g",
    "cloth_b",
    "rotation_a",
    "rotation_b",
    "scale",
    "cx",
    "cy",
    "yaw",
    "pitch",
    "brightness",
    "light_angle",
    "light_strength",
    "bg_type",
    "bg_r1",
    "bg_g1",
    "bg_b1",
    "bg_r2",
    "bg_g2",
    "bg_b2",
    "bg_angle",
    "noise_std",
    "noise_tile",
    "noise_dy",
    "noise_dx",
    "tex_tile",
    "tex_dy",
    "tex_dx",
    "bg_tile",
    "bg_dy",
    "bg_dx",
    "occluded",
    "occ_type",
)
# Streams whose values go to the renderer as they are (uniform in (0, 1)).
_RAW = (
    "hair_len",
    "fringe_phase",
    "bald_amount",
    "beard_density",
    "hair_volume",
    "skin_tone",
    "hair_tint",
    "light_angle",
    "bg_angle",
)
# Uniforms behind label-dependent decisions (long hair, beard, ...): the renderer
# compares them with label-dependent probabilities, so they are kept as ``u_*``.
_DECIDE = ("disgust_side", "long_hair", "fringe", "bald", "beard", "lipstick", "eyeliner")


def _inverse_cdf(u: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    c = np.cumsum(np.asarray(weights, np.float64))
    return np.minimum(np.searchsorted(c, u * c[-1], side="right"), len(weights) - 1)


def _labels_from(u: dict[str, np.ndarray], spec: FaceSpec) -> dict[str, np.ndarray]:
    lo, hi = spec.age_range
    w = spec.age_weights or (1.0,)
    ref = lo + (_inverse_cdf(u["age_band"], w) + u["age_pos"]) * ((hi - lo) / len(w))
    older = lo + (hi - lo) * (0.6 + 0.4 * u["age_pos"])
    age = np.where(u["age_mix"] < spec.shift.age_mix, older, ref)
    return {
        "age": age.astype(np.float32),
        "gender": (u["gender"] < spec.gender_p_male).astype(np.int8),
        "emotion": _inverse_cdf(u["emotion"], spec.emotion_p or (1.0,) * 7).astype(np.int8),
    }


def _streams(n: int, seed: int, start: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    _check(isinstance(n, (int, np.integer)) and n >= 0, "n", "a non-negative int", n)
    _check(isinstance(start, (int, np.integer)) and start >= 0, "start", "a non-negative int", start)
    index = np.arange(start, start + n, dtype=np.int64)
    u = uniforms(int(seed), index, len(_STREAMS))
    return index, {name: u[:, j] for j, name in enumerate(_STREAMS)}


def sample_labels(n: int, seed: int, spec: FaceSpec = DEFAULT_SPEC, start: int = 0) -> dict[str, np.ndarray]:
    """Labels (``age``, ``gender``, ``emotion``, ``index``) of samples ``start .. start+n-1``.

    Cheap (no rendering): an oracle can label any index range without pixels.
    """
    index, u = _streams(n, seed, start)
    return {**_labels_from(u, spec), "index": index}


def sample_params(n: int, seed: int, spec: FaceSpec = DEFAULT_SPEC, start: int = 0) -> dict[str, np.ndarray]:
    """Labels plus every latent the renderer needs, one array of length ``n`` each.

    Splitting sampling from :func:`render` lets callers change one label while
    keeping identity and nuisances fixed (see ``generate(overrides=...)``).
    """
    index, u = _streams(n, seed, start)
    sh = spec.shift
    g = lambda a, b: normal(u[a], u[b])
    f32 = lambda x: np.asarray(x, np.float32)
    p: dict[str, np.ndarray] = {**_labels_from(u, spec), "index": index}
    p.update({k: f32(u[k]) for k in _RAW})
    p.update({f"u_{k}": f32(u[k]) for k in _DECIDE})
    p.update(
        {
            "expression_intensity": f32(0.2 + 0.8 * u["intensity"] ** 0.8),
            "rest_curve": f32(0.012 * g("rest_curve_a", "rest_curve_b")),
            "rest_brow": f32(0.012 * g("rest_brow_a", "rest_brow_b")),
            "grey_offset": f32(g("grey_a", "grey_b")),
            "jaw_noise": f32(g("jaw_a", "jaw_b")),
            "rotation": f32(np.clip(0.12 * g("rotation_a", "rotation_b"), -0.35, 0.35)),
            "scale": f32(1.05 + 0.25 * u["scale"]),
            "cx": f32(0.16 * (u["cx"] - 0.5)),
            "cy": f32(0.06 + 0.12 * (u["cy"] - 0.5)),
            "yaw": f32(2 * u["yaw"] - 1),
            "pitch": f32(2 * u["pitch"] - 1),
            "brightness": f32((0.75 + 0.4 * u["brightness"]) * (1 + 0.55 * sh.lighting)),
            "light_strength": f32(0.35 * u["light_strength"] + 0.3 * abs(sh.lighting)),
            "bg_type": np.minimum((u["bg_type"] * 3).astype(np.int8), 2),
            "noise_std": f32(0.04 * u["noise_std"] + sh.noise),
            "occluded": (u["occluded"] < sh.occlusion).astype(np.int8),
            "occlusion_type": (u["occ_type"] < 0.5).astype(np.int8),  # 0 sunglasses, 1 mask
            "eye_colour": _inverse_cdf(u["eye_colour"], (0.5, 0.25, 0.15, 0.1)).astype(np.int8),
            "hair_colour": _inverse_cdf(u["hair_base"], (0.35, 0.3, 0.15, 0.13, 0.07)).astype(np.int8),
            "clothing": f32(np.stack([u["cloth_r"], u["cloth_g"], u["cloth_b"]], 1)),
            "bg_colour1": f32(np.stack([u["bg_r1"], u["bg_g1"], u["bg_b1"]], 1)),
            "bg_colour2": f32(np.stack([u["bg_r2"], u["bg_g2"], u["bg_b2"]], 1)),
        }
    )
    for k in ("head_w", "head_h", "brow_th", "eye_size", "eye_sp", "mouth_w", "nose_w", "eye_person", "gaze_x", "gaze_y"):
        p[k] = f32(2 * u[k] - 1)  # symmetric identity jitter in [-1, 1]
    for k in ("noise", "tex", "bg"):
        p[f"{k}_tile"] = (u[f"{k}_tile"] * 32).astype(np.int64)
        p[f"{k}_dy"] = (u[f"{k}_dy"] * 2**20).astype(np.int64)
        p[f"{k}_dx"] = (u[f"{k}_dx"] * 2**20).astype(np.int64)
    return p


def render(params: Mapping[str, np.ndarray], size: int = 64, chunk: int | None = None) -> np.ndarray:
    """Render ``uint8 [n, size, size, 3]`` images from :func:`sample_params` output.

    Works in chunks of ``chunk`` samples (default: ~200k pixels, 48 images at
    64x64) so that the ``[n, H, W]`` temporaries stay cache-sized; the chunk
    size never changes any pixel.
    """
    n = len(params["age"])
    chunk = chunk or max(1, (48 * 64 * 64) // (size * size))
    out = np.empty((n, size, size, 3), np.uint8)
    for a in range(0, n, chunk):
        p = {k: v[a : a + chunk] for k, v in params.items()}
        img = _draw.draw_faces(p, size)
        img *= np.float32(255.0)
        img += np.float32(0.5)
        np.clip(img, 0.0, 255.0, out=img)
        out[a : a + chunk] = img.transpose(1, 2, 3, 0)
    return out


def generate(
    n: int, seed: int = 0, spec: FaceSpec = DEFAULT_SPEC, start: int = 0, overrides: Mapping[str, object] | None = None
) -> FaceBatch:
    """Generate samples ``start .. start+n-1`` of the dataset ``(seed, spec)``.

    ``overrides`` replaces any :func:`sample_params` entry (a scalar or an
    array of length ``n``) before rendering, e.g. ``{"emotion": 3}`` renders
    the same people, poses and lighting all smiling: the tool for checking
    that a label, and only that label, changes the image.
    """
    p = sample_params(n, seed, spec, start)
    for k, v in (overrides or {}).items():
        _check(k in p and k != "index", "overrides key", f"one of {sorted(set(p) - {'index'})}", k)
        shape = (n, *p[k].shape[1:])
        p[k] = np.ascontiguousarray(np.broadcast_to(np.asarray(v).astype(p[k].dtype), shape))
    images = render(p, spec.size)
    nuisance = {k: v for k, v in p.items() if k not in LABELS and k != "index"}
    nuisance.update(_draw.derived(p))
    return FaceBatch(images=images, age=p["age"], gender=p["gender"], emotion=p["emotion"], index=p["index"], nuisance=nuisance)


def iter_batches(
    n: int, seed: int = 0, spec: FaceSpec = DEFAULT_SPEC, batch_size: int = 1024, start: int = 0
) -> Iterator[FaceBatch]:
    """Yield ``generate`` batches covering samples ``start .. start+n-1`` in order.

    Streams a dataset far larger than memory; concatenating the batches gives
    exactly ``generate(n, seed, spec, start)``.
    """
    _check(isinstance(batch_size, (int, np.integer)) and batch_size >= 1, "batch_size", "a positive int", batch_size)
    for off in range(0, n, batch_size):
        yield generate(min(batch_size, n - off), seed, spec, start + off)
