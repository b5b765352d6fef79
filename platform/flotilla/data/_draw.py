"""Vectorised drawing primitives behind :mod:`flotilla.data.synthetic`.

Everything here works on whole chunks of images at once (``[n, h, w]`` float32
arrays) because a Python loop per image would be ~100x too slow for the
"thousands of images per second on one core" budget.

Two rules keep the generator's determinism contract (sample ``i`` depends only
on ``(seed, i, spec)``, never on which other samples share its chunk):

* random numbers come from a counter-based hash of ``(seed, index, stream)``,
  never from a sequential generator, and
* shapes are only evaluated inside windows that are the *union* of the
  samples' bounding boxes (padded by a few pixels); outside its own box a
  sample's alpha is exactly 0, and painting with alpha 0 is an exact no-op,
  so the window size chosen for a chunk cannot change any pixel.

It is one module, over the ~400-line guide, on purpose: the primitives, the
palettes and ``draw_faces`` share those two rules and the ``Frame`` window
arithmetic, and ``draw_faces`` is one painter's pass (background, hair, head, eyes, brows,
nose, mouth, lighting, in paint order) whose steps share its closures and geometry.
Split across modules, the determinism contract would have to be re-checked at
every seam; kept together, it is read and tested in one place.
"""

from __future__ import annotations

import functools

import numpy as np

F32 = np.float32
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap bijective hash with good avalanche."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniforms(seed: int, index: np.ndarray, n_streams: int) -> np.ndarray:
    """``[n, n_streams]`` float64 uniforms in (0, 1) keyed by (seed, index, stream).

    Counter-based (a hash, not a sequential generator), so any sample can be
    regenerated on its own, in any batch, on any worker.
    """
    key = _mix64(np.array([seed % 2**64], dtype=np.uint64) ^ _GOLDEN)
    i = np.asarray(index, dtype=np.int64).astype(np.uint64)[:, None]
    k = np.arange(n_streams, dtype=np.uint64)[None, :]
    z = _mix64(_mix64(i * _GOLDEN + key) + k * np.uint64(0xD1B54A32D192ED03))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def normal(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Standard normals from two uniform arrays (Box-Muller)."""
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def n_tiles(size: int) -> int:
    """Tiles per noise bank: 32 at small sizes, fewer for big images (bounded memory)."""
    return int(np.clip(2**22 // (size * size), 4, 32))


@functools.lru_cache(maxsize=8)
def noise_banks(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed per-size tiles: white noise ``[3, K*S*S]``, smooth and blotchy ``[K*S*S]``.

    Drawing fresh noise per pixel per image would dominate the run time; a
    bank of periodic tiles, picked and rolled/flipped per sample, costs one
    gather. The banks use a fixed seed, so they are identical everywhere.
    """
    k, s = n_tiles(size), size
    rng = np.random.default_rng(20240611 + size)
    white = rng.standard_normal((3, k * s * s)).astype(F32)
    f = np.fft.fftfreq(s) * s
    rad2 = f[:, None] ** 2 + f[None, :] ** 2

    def lowpass(cut: float) -> np.ndarray:
        spec = np.fft.fft2(rng.standard_normal((k, s, s))) * np.exp(-rad2 / (2 * cut**2))
        t = np.fft.ifft2(spec).real
        t -= t.min(axis=(1, 2), keepdims=True)
        t /= t.max(axis=(1, 2), keepdims=True)
        return t.astype(F32).reshape(-1)

    return white, lowpass(1.6), lowpass(s / 16.0)


def tile_index(size: int, tile: np.ndarray, dy: np.ndarray, dx: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """``[n, S, S]`` flat indices into a bank: tile ``tile``, rolled by (dy, dx), maybe flipped."""
    ar = np.arange(size)
    tile = tile % n_tiles(size)
    sgn = np.where(flip, -1, 1)[:, None]
    rows = tile[:, None] * size * size + ((dy[:, None] + sgn * ar) % size) * size
    cols = (dx[:, None] + sgn * ar) % size
    return rows[:, :, None] + cols[:, None, :]


def soft(d: np.ndarray, inv_pix: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of ``d > 0`` (d in face units, ~1 pixel ramp). Modifies ``d``."""
    d *= inv_pix
    d += F32(0.5)
    return np.clip(d, F32(0.0), F32(1.0), out=d)


def ellipse(x: np.ndarray, y: np.ndarray, a, b, inv_pix) -> np.ndarray:
    """Coverage of the ellipse ``(x/a)^2 + (y/b)^2 <= 1`` (approximate signed distance)."""
    r = np.square(x / a)
    r += np.square(y / b)
    np.sqrt(r, out=r)
    return soft((F32(1.0) - r) * np.minimum(a, b), inv_pix)


def band(dist: np.ndarray, half: np.ndarray | np.floating | float, inv_pix: np.ndarray) -> np.ndarray:
    """Coverage of the stroke ``|dist| <= half`` (lines, curves, rings)."""
    return soft(half - np.abs(dist), inv_pix)


def tri(x: np.ndarray) -> np.ndarray:
    """Triangle wave with period 1 and range [0, 1]: a cheap, exact stand-in for sin."""
    f = x - np.floor(x)
    return np.abs(f - F32(0.5)) * F32(2.0)


def col(c: np.ndarray) -> np.ndarray:
    """``[n, 3]`` colours to the ``[3, n, 1, 1]`` layout the planar canvas broadcasts with."""
    return np.ascontiguousarray(np.asarray(c, dtype=F32).T)[:, :, None, None]


class Frame:
    """A chunk of images: face-coordinate windows, local coordinates and a planar canvas.

    Face coordinates ``(u, v)``: head centre at the origin, ``v`` pointing down,
    head half-height ~0.6. Image coordinates ``(X, Y)`` span [-1, 1].
    ``X = cx + s*(cos r*u - sin r*v)``, ``Y = cy + s*(sin r*u + cos r*v)``.
    Methods take an optional ``idx`` (sample subset) so that rare layers
    (beards, long hair, occluders) only cost time for the samples that have them.
    """

    def __init__(self, size: int, cx, cy, scale, rot):
        self.size = size
        self.n = len(cx)
        self.grid = ((np.arange(size) + 0.5) * (2.0 / size) - 1.0).astype(F32)
        self.cx, self.cy, self.scale = (np.asarray(a, np.float64) for a in (cx, cy, scale))
        self.cos, self.sin = np.cos(rot), np.sin(rot)
        c, s = self.cos / self.scale, self.sin / self.scale
        self._coef = [x.astype(F32)[:, None, None] for x in (c, s)]
        self._off = (-(c * self.cx + s * self.cy), s * self.cx - c * self.cy)
        self.inv_pix = (size * self.scale / 2.0).astype(F32)[:, None, None]
        self.img = np.empty((3, self.n, size, size), F32)  # planar: fast broadcasting

    def window(self, u0, u1, v0, v1, idx=None, pad: int = 2) -> tuple[slice, slice]:
        """Pixel slices covering the face-coordinate box of every (selected) sample."""
        z = np.zeros(self.n)
        u = np.stack(np.broadcast_arrays(u0, u1, z))[:2, None, :]
        v = np.stack(np.broadcast_arrays(v0, v1, z))[None, :2, :]
        cx, cy, sc, co, si = self.cx, self.cy, self.scale, self.cos, self.sin
        if idx is not None:
            u, v, cx, cy, sc, co, si = (t[..., idx] for t in (u, v, cx, cy, sc, co, si))
        xs = cx + sc * (co * u - si * v)
        ys = cy + sc * (si * u + co * v)
        h = self.size / 2.0
        lo = np.floor((np.array([ys.min(), xs.min()]) + 1.0) * h) - pad
        hi = np.ceil((np.array([ys.max(), xs.max()]) + 1.0) * h) + pad
        lo, hi = np.clip(lo, 0, self.size).astype(int), np.clip(hi, 0, self.size).astype(int)
        return slice(lo[0], max(lo[0], hi[0])), slice(lo[1], max(lo[1], hi[1]))

    def uv(self, win: tuple[slice, slice], ou=0.0, ov=0.0, idx=None):
        """Face coordinates relative to the per-sample origin ``(ou, ov)`` over ``win``."""
        c, s = self._coef
        x = self.grid[win[1]][None, None, :]
        y = self.grid[win[0]][None, :, None]
        ku = (self._off[0] - ou).astype(F32)[:, None, None]
        kv = (self._off[1] - ov).astype(F32)[:, None, None]
        if idx is not None:
            c, s, ku, kv = c[idx], s[idx], ku[idx], kv[idx]
        return c * x + (s * y + ku), (c * y + kv) - s * x

    def paint(self, win, alpha: np.ndarray, colour: np.ndarray, idx=None) -> None:
        """Alpha-blend a per-sample colour (``[3, n, 1, 1]``) over the window."""
        if idx is None:
            v = self.img[:, :, win[0], win[1]]
            tmp = colour - v
            tmp *= alpha
            v += tmp
        else:
            v = self.img[:, idx, win[0], win[1]]
            tmp = colour[:, idx] - v
            tmp *= alpha
            v += tmp
            self.img[:, idx, win[0], win[1]] = v

    def shade(self, win, alpha: np.ndarray, k) -> None:
        """Multiply by ``1 - k*alpha``: darkening that keeps the underlying skin tone."""
        v = self.img[:, :, win[0], win[1]]
        alpha *= k
        np.subtract(F32(1.0), alpha, out=alpha)
        v *= alpha


# --------------------------------------------------------------------------- faces
# Palettes (RGB in [0, 1]). Skin tones run light -> dark; hair: black, dark
# brown, brown, blonde, red; eyes: brown, dark brown, blue, green.
_SKIN = np.array([[0.98, 0.84, 0.74], [0.90, 0.70, 0.56], [0.74, 0.52, 0.38], [0.50, 0.33, 0.23], [0.30, 0.19, 0.13]])
_HAIR = np.array([[0.07, 0.06, 0.05], [0.22, 0.14, 0.08], [0.42, 0.28, 0.15], [0.85, 0.70, 0.42], [0.62, 0.26, 0.10]])
_EYE = np.array([[0.40, 0.24, 0.12], [0.18, 0.11, 0.07], [0.30, 0.50, 0.75], [0.35, 0.55, 0.30]])
_GREY = np.array([0.85, 0.85, 0.83])
# Expression deltas at full intensity, rows in EMOTIONS order. Columns:
# brow raise, inner-brow raise, eye openness, mouth curve (+ = corners up),
# mouth opening, mouth width, nose wrinkle, teeth, frown lines, one-sided lip raise.
_EXPR = np.array(
    [
        [-0.035, -0.060, -0.35, -0.015, 0.000, -0.12, 0.3, 0.0, 1.0, 0.000],  # angry
        [-0.025, -0.020, -0.40, -0.035, 0.010, 0.00, 1.0, 0.3, 0.3, 0.055],  # disgust
        [0.045, 0.050, 0.45, -0.020, 0.050, 0.18, 0.0, 0.7, 0.2, 0.000],  # fear
        [0.010, 0.000, -0.25, 0.085, 0.025, 0.22, 0.0, 1.0, 0.0, 0.000],  # happy
        [0.000, 0.080, -0.20, -0.065, 0.000, -0.05, 0.0, 0.0, 0.2, 0.000],  # sad
        [0.080, 0.015, 0.60, 0.000, 0.110, -0.30, 0.0, 0.3, 0.0, 0.000],  # surprise
        [0.0] * 10,  # neutral
    ]
)


def _geometry(p: dict) -> dict:
    """Per-sample face geometry and colours (float64 ``[n]`` / ``[n, 3]``) from labels + latents.

    Label-dependent attributes (long hair, beards, baldness, greying) are
    decided here from raw uniforms, so overriding a label re-decides them for
    the same person, as the label would in the real world.
    """
    age = p["age"].astype(np.float64)
    male = p["gender"] == 1
    mc = np.where(male, 1.0, -1.0) * (1 - 0.75 * np.clip((15 - age) / 13, 0, 1))
    g = {"child": np.clip((15 - age) / 13, 0, 1), "adult": np.clip((age - 18) / 55, 0, 1), "old": np.clip((age - 35) / 45, 0, 1)}
    ch = g["child"]
    e = _EXPR[p["emotion"]] * p["expression_intensity"][:, None]
    g["e"], g["teeth"] = e, _EXPR[p["emotion"], 7] * (p["expression_intensity"] > 0.3)
    a = 0.46 * (1 + 0.05 * p["head_w"]) * (1 + 0.06 * ch) * (1 + 0.025 * mc)
    g.update(
        a=a,
        b=0.6 * (1 + 0.04 * p["head_h"]) * (1 - 0.08 * ch),
        jaw=np.clip(0.8 + 0.08 * mc + 0.04 * p["jaw_noise"], 0.6, 1.0),
        square=np.clip(0.45 + 0.35 * mc + 0.2 * p["jaw_noise"], 0, 1),
        mid=0.07 * p["yaw"],
        scale=p["scale"] * (1 - 0.14 * ch),
        ey=-0.04 + 0.1 * ch + 0.03 * p["pitch"],
    )
    g["ex"] = 0.19 * (a / 0.46) * (1 + 0.04 * p["eye_sp"])
    g["ew"] = ew = 0.09 * (1 + 0.28 * ch) * (1 + 0.06 * p["eye_size"])
    g["eh0"] = ew * (0.52 + 0.12 * ch)
    g["eh"] = g["eh0"] * np.clip(1 + e[:, 2] + 0.12 * p["eye_person"], 0.12, 2.5)
    g["by"] = g["ey"] - 0.105 - 0.03 * ch - e[:, 0]
    g["inner"] = e[:, 1] + p["rest_brow"]
    g["bt"] = (0.024 + 0.007 * (mc + 1)) * (1 + 0.15 * p["brow_th"])
    g["ny"] = g["ey"] + 0.25 - 0.08 * ch + 0.015 * p["pitch"]
    g["nw"] = 0.055 * (1 - 0.25 * ch) * (1 + 0.1 * p["nose_w"])
    g["my"] = g["ny"] + 0.15 - 0.035 * ch
    g["mw"] = 0.145 * (1 - 0.15 * ch) * (1 + 0.06 * p["mouth_w"]) * (1 + e[:, 5])
    g["curve"] = e[:, 3] + p["rest_curve"]
    g["long_hair"] = p["u_long_hair"] < np.where(male, 0.12, 0.86)
    g["hair_len"] = np.where(g["long_hair"], 0.3 + 0.8 * p["hair_len"], 0.0)
    g["bald"] = np.where(male & (p["u_bald"] < 0.6 * g["old"]), 0.35 + 0.65 * p["bald_amount"], 0)
    g["beard"] = np.where(male & (age >= 17) & (p["u_beard"] < 0.3), 0.25 + 0.65 * p["beard_density"], 0.0)
    g["fringe"] = p["u_fringe"] < 0.3
    g["vol"] = 0.03 + 0.06 * p["hair_volume"] + 0.03 * g["long_hair"]
    g["hy"] = -0.62 * g["b"] + 0.1 * g["fringe"] - 0.22 * g["bald"]
    g["grey"] = np.clip((age - 40 + 10 * p["grey_offset"]) / 30, 0, 1)
    base = _HAIR[p["hair_colour"]] * (0.9 + 0.2 * p["hair_tint"])[:, None]
    gr = g["grey"][:, None]
    g["hair_rgb"] = base * (1 - gr) + _GREY * gr
    g["brow_rgb"] = (base * (1 - 0.6 * gr) + _GREY * 0.6 * gr) * 0.75
    t = p["skin_tone"] * (len(_SKIN) - 1)
    skin = np.stack([np.interp(t, np.arange(len(_SKIN)), _SKIN[:, c]) for c in range(3)], 1)
    g["skin_rgb"] = skin
    lipstick = (~male) & (age > 15) & (p["u_lipstick"] < 0.35)
    g["lip_rgb"] = np.where(lipstick[:, None], [[0.72, 0.12, 0.17]], skin * [0.85, 0.55, 0.55])
    g["liner"] = ((~male) & (age > 14) & (p["u_eyeliner"] < 0.5)) * 0.012
    g["occ_glasses"] = (p["occluded"] == 1) & (p["occlusion_type"] == 0)
    g["occ_mask"] = (p["occluded"] == 1) & (p["occlusion_type"] == 1)
    return g


def derived(p: dict) -> dict[str, np.ndarray]:
    """Label-dependent attributes decided at render time (for analysis and tests)."""
    g = _geometry(p)
    return {
        "long_hair": g["long_hair"].astype(np.int8),
        "beard": (g["beard"] > 0).astype(np.int8),
        "bald": (g["bald"] > 0).astype(np.int8),
        "grey": g["grey"].astype(np.float32),
    }


def draw_faces(p: dict, size: int) -> np.ndarray:
    """Render one chunk; returns planar float ``[3, n, size, size]`` images in ~[0, 1]."""
    g = _geometry(p)
    n = len(p["age"])
    fr = Frame(size, p["cx"], p["cy"], g["scale"], p["rotation"])
    ip = fr.inv_pix
    white, smooth, blotch = noise_banks(size)
    f0, f1 = F32(0), F32(1)

    def c3(x):  # per-sample scalars -> [n, 1, 1] float32
        return np.asarray(x, F32)[:, None, None]

    def flat(v):
        return col(np.broadcast_to(np.asarray(v, np.float64), (n, 3)))

    def region(u0, u1, v0, v1, ou=0.0, ov=0.0, idx=None):
        win = fr.window(ou + u0, ou + u1, ov + v0, ov + v1, idx)
        return (win, *fr.uv(win, ou, ov, idx))

    skin, hair = col(g["skin_rgb"]), col(g["hair_rgb"])
    a, b, mid, ey, e = g["a"], g["b"], g["mid"], g["ey"], g["e"]
    A, B = c3(a), c3(b)

    # Background: solid, linear gradient or smooth blotches (nuisance only).
    gx, gy = fr.grid[None, None, :], fr.grid[None, :, None]
    ang = 2 * np.pi * p["bg_angle"]
    t = c3(0.5 * np.cos(ang)) * gx + (c3(0.5 * np.sin(ang)) * gy + F32(0.5))
    t *= c3(p["bg_type"] == 1)
    if (p["bg_type"] == 2).any():
        bidx = tile_index(size, p["bg_tile"], p["bg_dy"], p["bg_dx"], p["bg_dx"] & 1)
        t += c3(p["bg_type"] == 2) * smooth.take(bidx)
    c1 = col(p["bg_colour1"])
    np.multiply(col(p["bg_colour2"]) - c1, t, out=fr.img)
    fr.img += c1

    # Long hair behind the head (only the long-haired samples are computed).
    lng = np.flatnonzero(g["long_hair"])
    wmax = a + 0.07 + 0.12 * g["hair_len"]
    if lng.size:
        hl, al, il = c3(g["hair_len"])[lng], A[lng], ip[lng]
        win, du, dv = region(-wmax, wmax, -0.45, g["hair_len"] + 0.02, idx=lng)
        w = al + F32(0.07) + F32(0.12) * np.clip(dv, f0, None)
        fr.paint(win, soft(w - np.abs(du), il) * soft(hl - dv, il) * soft(dv + F32(0.4), il), hair, lng)
    # Neck, clothes, ears.
    nk = 0.17 * (a / 0.46) * (1 + 0.08 * (p["gender"] * 2.0 - 1))
    win, du, dv = region(-nk - 0.02, nk + 0.02, 0.15, b + 0.6)
    fr.paint(win, soft(c3(nk) - np.abs(du), ip) * soft(dv - F32(0.2), ip) * soft(B + F32(0.55) - dv, ip), skin * F32(0.8))
    win, du, dv = region(-1.05, 1.05, b + 0.1, b + 1.15)
    fr.paint(win, ellipse(du, dv - (B + F32(0.62)), f1, F32(0.5), ip), col(0.1 + 0.8 * p["clothing"]))
    win, du, dv = region(-a - 0.1, a + 0.1, -0.06, 0.2, 0.3 * mid, ey)
    fr.paint(win, ellipse(np.abs(du) - A * F32(0.97), dv - F32(0.07), F32(0.06), F32(0.1), ip), skin * F32(0.92))

    # Head: ellipse on top, a jaw below that narrows to the chin (square for men).
    hwin, hu, hv = region(-a - 0.02, a + 0.02, -b - 0.02, b + 0.02)
    q = np.clip(hv * c3(1 / b), -f1, f1)
    q2 = q * q
    rnd = np.sqrt(f1 - q2)
    qp = np.clip(q, f0, None)
    sq = np.sqrt(f1 - q2 * q2) - rnd
    sq *= c3(g["square"]) * (qp > 0)
    sq += rnd
    sq *= A
    sq *= f1 - c3(1 - g["jaw"]) * qp
    ha = soft(sq - np.abs(hu), ip) * soft(B - np.abs(hv), ip)
    fr.paint(hwin, ha, skin)
    fr.shade(hwin, ha * np.square(hu * c3(1 / a)), F32(0.2))
    old = g["old"]
    if old.any():
        tidx = tile_index(size, p["tex_tile"], p["tex_dy"], p["tex_dx"], p["tex_dx"] & 1)
        tex = blotch.take(tidx[:, hwin[0], hwin[1]]) - F32(0.45)
        fr.shade(hwin, ha * tex, c3(0.35 * old))
        # Forehead lines.
        win, du, dv = region(-0.32, 0.32, -0.27, -0.02, mid, g["by"])
        d = (F32(0.22) - tri((dv + F32(0.01) * tri(du * F32(3))) * F32(1 / 0.055))) * F32(0.055)
        fr.shade(
            win,
            soft(d, ip) * soft(F32(0.27) * A / F32(0.46) - np.abs(du), ip) * soft(F32(-0.04) - dv, ip) * soft(dv + F32(0.24), ip),
            c3(0.5 * old),
        )
    # Beard (drawn before the mouth so the lips stay visible).
    brd = np.flatnonzero(g["beard"])
    if brd.size:
        fr.paint(hwin, ha[brd] * soft(hv[brd] - c3(g["ny"] + 0.035)[brd], ip[brd]) * c3(g["beard"])[brd], hair, brd)
    # Hair on top (receding with baldness, a fringe for some) and locks beside the face.
    vol = g["vol"]
    win, du, dv = region(-a - vol - 0.02, a + vol + 0.02, -b - 1.5 * vol - 0.02, np.minimum(b + vol, g["hy"] + 0.6))
    line = c3(g["hy"]) + F32(0.33) * np.square(du * c3(1 / a))
    if g["fringe"].any():
        line += c3(0.03 * g["fringe"]) * tri(du * F32(7) + c3(p["fringe_phase"]))
    alpha = ellipse(du, dv + c3(0.5 * vol), A + c3(vol), B + c3(vol), ip)
    alpha *= soft(line - dv, ip)
    if (g["bald"] > 0.5).any():
        alpha *= f1 - c3(g["bald"] > 0.5) * soft(c3(0.8 * a * g["bald"]) - np.abs(du), ip)
    fr.paint(win, alpha, hair)
    if lng.size:
        hl, al, il = c3(g["hair_len"])[lng], A[lng], ip[lng]
        win, du, dv = region(-wmax, wmax, g["hy"], g["hair_len"] + 0.02, idx=lng)
        adu = np.abs(du)
        w = al + F32(0.07) + F32(0.12) * np.clip(dv, f0, None)
        fr.paint(
            win,
            soft(adu - al + F32(0.07), il) * soft(w - adu, il) * soft(hl - dv, il) * soft(dv - c3(g["hy"] + 0.05)[lng], il),
            hair,
            lng,
        )

    # Eyes (origin between the eyes; x mirrored so both eyes cost one pass).
    ex, ew, eh = c3(g["ex"]), c3(g["ew"]), c3(g["eh"])
    win, du, dv = region(-g["ex"] - g["ew"] - 0.04, g["ex"] + g["ew"] + 0.04, -g["eh"] - 0.045, g["eh"] + 0.065, mid, ey)
    x = np.abs(du) - ex
    bag = band(dv - eh - F32(0.035) + F32(0.03) * np.square(x / ew), F32(0.012), ip)
    fr.shade(win, bag * soft(ew - np.abs(x), ip), c3(0.3 * g["adult"]))
    fr.paint(win, ellipse(x, dv + F32(0.006), ew + F32(0.012), eh + c3(0.02 + g["liner"]), ip), flat(0.12))
    sclera = ellipse(x, dv, ew, eh, ip)
    fr.paint(win, sclera, flat(0.94))
    xi = np.abs(du - c3(0.02 * p["gaze_x"])) - ex
    yi = dv - c3(0.01 * p["gaze_y"])
    r = np.sqrt(xi * xi + yi * yi)
    ri = c3(g["ew"] * (0.48 + 0.1 * g["child"]))
    fr.paint(win, soft(ri - r, ip) * sclera, col(_EYE[p["eye_colour"]]))
    fr.paint(win, soft(ri * F32(0.45) - r, ip) * sclera, flat(0.03))
    if old.any():  # crow's feet: three short lines fanning out from each outer corner
        win, du, dv = region(-g["ex"] - 2.2 * g["ew"] - 0.1, g["ex"] + 2.2 * g["ew"] + 0.1, -0.05, 0.05, mid, ey)
        xo = np.abs(du) - ex - ew * F32(1.1)
        feet = band(dv, F32(0.008), ip)
        feet += band(dv - F32(0.5) * xo, F32(0.008), ip)
        feet += band(dv + F32(0.5) * xo, F32(0.008), ip)
        feet *= soft(xo, ip) * soft(F32(0.07) - xo, ip)
        fr.shade(win, feet, c3(0.45 * old))
    # Brows: raised, lowered, inner ends up (sad, fear) or down (angry).
    inner, bt, by = g["inner"], g["bt"], g["by"] - g["ey"]
    bw = ew * F32(1.25)
    win, du, dv = region(
        -g["ex"] - 1.25 * g["ew"] - 0.04,
        g["ex"] + 1.25 * g["ew"] + 0.04,
        by - 0.03 - np.abs(inner) - bt,
        by + np.abs(inner) + bt,
        mid,
        ey,
    )
    t = (np.abs(du) - ex - F32(0.01)) / bw
    yb = c3(by) - F32(0.02) * (f1 - t * t) - c3(inner) * (F32(0.5) - t * F32(0.5))
    half = c3(bt / 2) * (f1 - F32(0.15) * (t + f1))
    fr.paint(win, band(dv - yb, half, ip) * soft((f1 - np.abs(t)) * bw, ip), col(g["brow_rgb"]))
    # Frown lines between the brows and nose wrinkles (angry, disgust).
    if (e[:, 8] > 0).any() or (e[:, 6] > 0).any():
        win, du, dv = region(-0.07, 0.07, by, 0.17, mid, ey)
        top, adu = c3(by), np.abs(du)
        fr.shade(
            win,
            band(adu - F32(0.028), F32(0.006), ip) * soft(dv - top - F32(0.01), ip) * soft(top + F32(0.09) - dv, ip),
            c3(0.5 * e[:, 8]),
        )
        d = (F32(0.22) - tri(dv * F32(1 / 0.032))) * F32(0.032)
        fr.shade(
            win, soft(d, ip) * soft(F32(0.05) - adu, ip) * soft(dv - F32(0.04), ip) * soft(F32(0.15) - dv, ip), c3(0.5 * e[:, 6])
        )
    sel = np.flatnonzero(g["occ_glasses"])
    if sel.size:
        win, du, dv = region(
            -g["ex"] - g["ew"] - 0.1, g["ex"] + g["ew"] + 0.1, -g["eh0"] - 0.07, g["eh0"] + 0.07, mid, ey, idx=sel
        )
        fr.paint(
            win,
            soft((ex + ew)[sel] + F32(0.07) - np.abs(du), ip[sel]) * band(dv, c3(g["eh0"] + 0.045)[sel], ip[sel]),
            flat(0.05),
            sel,
        )

    # Nose and nasolabial folds (deepen with age and with smiling).
    ny, nw, my, mw = g["ny"], c3(g["nw"]), g["my"], g["mw"]
    win, du, dv = region(-0.12, 0.12, -0.2, 0.05, 1.3 * mid, ny)
    fr.shade(win, band(du - nw * F32(0.75), F32(0.009), ip) * soft(dv + F32(0.17), ip) * soft(F32(-0.03) - dv, ip), F32(0.2))
    fr.shade(win, ellipse(np.abs(du) - nw * F32(0.55), dv, F32(0.024), F32(0.014), ip), F32(0.55))
    span = my - ny + 0.04
    win, du, dv = region(-mw - 0.1, mw + 0.1, -0.02, span + 0.05, mid, ny)
    xf = nw * F32(1.5) + (c3(mw + 0.025) - nw * F32(1.5)) * np.clip(dv * c3(1 / span), f0, f1)
    fr.shade(
        win,
        band(np.abs(du) - xf, F32(0.009), ip) * soft(dv, ip) * soft(c3(span + 0.01) - dv, ip),
        c3(0.12 + 0.3 * g["adult"] + 3 * np.maximum(g["curve"], 0)),
    )

    # Mouth: a curve (smile/frown), an opening with teeth, lips; disgust lifts one side.
    win, du, dv = region(-mw * 1.1 - 0.05, mw * 1.1 + 0.05, -0.12, 0.18, mid, my)
    t = du * c3(1 / mw)
    tt = np.minimum(t * t, f1)
    env = np.sqrt(f1 - tt)
    yc = c3(-g["curve"]) * tt
    side = np.where(p["u_disgust_side"] < 0.5, -1.0, 1.0)
    yu = yc - c3(0.6 * e[:, 4]) * env
    yl = yc + c3(1.4 * e[:, 4]) * env
    if (e[:, 9] > 0).any():
        yu -= c3(e[:, 9]) * np.clip(F32(0.5) + c3(0.5 * side) * t, f0, f1) * env
    hc = soft((f1 - np.abs(t)) * c3(mw), ip)
    fem = c3(0.006 * (p["gender"] == 0))
    lips = soft(dv - yu + (F32(0.016) + fem) * env, ip)
    lips *= soft(yl + (F32(0.024) + fem) * env - dv, ip)
    lips *= hc
    fr.paint(win, lips, col(g["lip_rgb"]))
    inside = soft(dv - yu, ip) * soft(yl - dv, ip)
    inside *= hc
    fr.paint(win, inside, flat([0.25, 0.06, 0.06]))
    fr.paint(win, inside * soft(yu + F32(0.03) - dv, ip) * c3(g["teeth"]), flat(0.92))
    fr.paint(win, hc * band(dv - yc, F32(0.007), ip) * F32(0.8), flat([0.3, 0.1, 0.1]))
    sel = np.flatnonzero(g["occ_mask"])  # a face mask (shift only) over the lower face
    if sel.size:
        fr.paint(hwin, ha[sel] * soft(hv[sel] - c3(ny - 0.03)[sel], ip[sel]), flat([0.78, 0.86, 0.93]), sel)

    # Lighting (global brightness x directional gradient) and pixel noise.
    la = 2 * np.pi * p["light_angle"]
    ls = p["light_strength"] * p["brightness"]
    fr.img *= c3(ls * np.cos(la)) * gx + (c3(ls * np.sin(la)) * gy + c3(p["brightness"]))
    nidx = tile_index(size, p["noise_tile"], p["noise_dy"], p["noise_dx"], p["noise_dx"] & 1)
    std = c3(p["noise_std"])
    for c in range(3):
        fr.img[c] += std * white[c].take(nidx)
    return fr.img
