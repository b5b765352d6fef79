"""Two-sample tests: RBF-kernel MMD (permutation p-value), Kolmogorov–Smirnov and chi-square (scipy).

The MMD and its permutation null are here (scipy has no kernel two-sample test); the KS and
chi-square p-values come from scipy.stats, whose exact and asymptotic laws are maintained and
tested upstream, rather than from hand-written special functions. Each test returns a
:class:`TwoSampleResult`; the monitor and ``bench/drift.py`` combine them in :mod:`flotilla.loop.drift`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from flotilla.errors import MonitoringError

__all__ = ["TwoSampleResult", "chi2_test", "ks_test", "mmd_test"]

MMD_MAX_SAMPLES = 1000
"""Per side: a larger sample is subsampled (seeded) to this many rows before the kernel matrix is built.

The permutation test costs O((n+m)²·permutations); at 1,000 a side it takes well under a second,
and a test at 1,000 against 1,000 already detects shifts far smaller than any that matters here.
"""


@dataclass(frozen=True)
class TwoSampleResult:
    """One test of "reference and current come from the same distribution"; a small ``p_value`` says they do not."""

    method: str  # "mmd-rbf" | "ks" | "chi2"
    statistic: float  # MMD² (unbiased), KS's D, or Pearson's X²
    p_value: float
    n_ref: int  # the sizes the test used (after any subsampling)
    n_cur: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "n_ref": self.n_ref,
            "n_cur": self.n_cur,
        }


def _rows(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise MonitoringError(f"{what} must be [n] or [n, features], got shape {a.shape}")
    if len(a) < 2:
        raise MonitoringError(f"{what} has {len(a)} sample(s); a two-sample test needs at least 2 on each side")
    if not np.isfinite(a).all():
        raise MonitoringError(f"{what} holds NaN or infinite values")
    return a


def mmd_test(
    reference: Any, current: Any, *, permutations: int = 200, seed: int = 0, max_samples: int = MMD_MAX_SAMPLES
) -> TwoSampleResult:
    """Maximum mean discrepancy with a Gaussian kernel and a permutation p-value (Gretton et al. 2012).

    The bandwidth is the median pairwise distance of the pooled sample (the median heuristic), so
    the test needs no tuning across embedding sizes. Inputs larger than ``max_samples`` per side are
    subsampled, seeded. The p-value is ``(1 + #{permuted MMD² ≥ observed}) / (1 + permutations)``: it
    never reaches 0, and its smallest value is ``1 / (1 + permutations)``.
    """
    x, y = _rows(reference, "reference"), _rows(current, "current")
    if x.shape[1] != y.shape[1]:
        raise MonitoringError(f"reference has {x.shape[1]} features per sample and current {y.shape[1]}")
    if permutations < 1:
        raise MonitoringError(f"permutations must be at least 1, got {permutations}")
    rng = np.random.default_rng(seed)
    x = x[rng.choice(len(x), max_samples, replace=False)] if len(x) > max_samples else x
    y = y[rng.choice(len(y), max_samples, replace=False)] if len(y) > max_samples else y
    z = np.concatenate([x, y])
    sq = np.einsum("ij,ij->i", z, z)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)
    m, n = len(x), len(y)
    off = d2[np.triu_indices(m + n, k=1)]
    scale = float(np.median(off[off > 0])) if bool((off > 0).any()) else 1.0
    k = np.exp(-d2 / scale)  # exp(-d²/(2σ²)) with σ² = median(d²)/2, i.e. σ the median distance up to √2
    observed = _mmd2(k, np.arange(m + n) < m, m, n)
    members = np.zeros((m + n, permutations), dtype=np.float64)
    for p in range(permutations):
        members[rng.permutation(m + n)[:m], p] = 1.0
    null = _mmd2_many(k, members, m, n)
    p_value = (1.0 + float(np.sum(null >= observed))) / (1.0 + permutations)
    return TwoSampleResult("mmd-rbf", float(observed), p_value, m, n)


def _mmd2(k: np.ndarray, in_x: np.ndarray, m: int, n: int) -> float:
    return float(_mmd2_many(k, in_x.astype(np.float64)[:, None], m, n)[0])


def _mmd2_many(k: np.ndarray, a: np.ndarray, m: int, n: int) -> np.ndarray:
    """Unbiased MMD² for each column of ``a`` (1 marks the reference's members), from two matrix products.

    With r = K·1 and T = 1ᵀK1: ΣXX = aᵀKa, ΣXY = aᵀr − aᵀKa, ΣYY = T − 2aᵀr + aᵀKa; the diagonal
    (k(x, x) = 1) is taken out of the within-sample sums. One GEMM serves every permutation.
    """
    r = k.sum(axis=1)
    total = float(r.sum())
    xx: np.ndarray = np.einsum("ip,ip->p", a, k @ a)
    xr: np.ndarray = a.T @ r
    yy = total - 2.0 * xr + xx
    xy = xr - xx
    out: np.ndarray = (xx - m) / (m * (m - 1)) + (yy - n) / (n * (n - 1)) - 2.0 * xy / (m * n)
    return out


def ks_test(reference: Any, current: Any) -> TwoSampleResult:
    """Two-sample Kolmogorov–Smirnov on 1-D values (a regression task's predictions).

    ``scipy.stats.ks_2samp``: the exact p-value for small samples, the asymptotic one for large.
    """
    from scipy.stats import ks_2samp

    x, y = _rows(reference, "reference"), _rows(current, "current")
    if x.shape[1] != 1 or y.shape[1] != 1:
        raise MonitoringError("the KS test takes one value per sample")
    res = ks_2samp(x[:, 0], y[:, 0])
    return TwoSampleResult("ks", float(res.statistic), float(res.pvalue), len(x), len(y))


def chi2_test(reference_counts: Any, current_counts: Any) -> TwoSampleResult:
    """Pearson's chi-square test of homogeneity on two histograms over the same categories.

    Categories empty on both sides are dropped (they carry no evidence); with fewer than two
    categories left there is nothing to compare and the p-value is 1. The p-value is
    ``scipy.stats.chi2.sf`` with (categories − 1) degrees of freedom.
    """
    from scipy.stats import chi2

    r = np.asarray(reference_counts, dtype=np.float64)
    c = np.asarray(current_counts, dtype=np.float64)
    if r.shape != c.shape or r.ndim != 1:
        raise MonitoringError(f"the two histograms must have the same categories, got shapes {r.shape} and {c.shape}")
    if (r < 0).any() or (c < 0).any() or not (np.isfinite(r).all() and np.isfinite(c).all()):
        raise MonitoringError("histogram counts must be finite and non-negative")
    n_ref, n_cur = int(r.sum()), int(c.sum())
    if n_ref < 1 or n_cur < 1:
        raise MonitoringError(f"a histogram is empty (reference {n_ref}, current {n_cur} samples)")
    keep = (r + c) > 0
    r, c = r[keep], c[keep]
    if len(r) < 2:
        return TwoSampleResult("chi2", 0.0, 1.0, n_ref, n_cur)
    col = r + c
    total = n_ref + n_cur
    e_r, e_c = col * n_ref / total, col * n_cur / total
    stat = float(np.sum((r - e_r) ** 2 / e_r) + np.sum((c - e_c) ** 2 / e_c))
    return TwoSampleResult("chi2", stat, float(chi2.sf(stat, len(r) - 1)), n_ref, n_cur)
