"""Replicate weights created from a design (R's ``as.svrepdesign``), re-weighted through every step.

A replicate design is the same `Design` carrying `Replicates`; every estimator of
`impactstudy.estimate` then takes its variance from the replicates (R's ``svrVar``).

- ``JK1`` / ``JKn``: delete-one-PSU jackknife (R's ``jk1weights`` / ``jknweights``), with the
  first-stage fpc as R applies it, replicates of exhaustively sampled strata dropped (R's default
  ``survey.drop.replicates``) and a one-PSU stratum handled by the design's ``lonely_psu`` rule
  (R's ``survey.lonely.psu``: fail, adjust, average, remove, certainty).
- ``BRR`` / ``Fay``: balanced half samples from R's choice of Hadamard matrix (``brrweights``,
  ``hadamard``, ``paley``); every stratum must have exactly 2 PSUs; the fpc is dropped, as R does.
- ``bootstrap``: R's ``bootweights`` (each stratum's n_h PSUs resampled with replacement, or without
  replacement from a pseudo-population of N_h when the design has an fpc; scale
  ``nbar / ((nbar - 1)(R - 1))``); ``subbootstrap``: Rao-Wu rescaling with n_h - 1 draws (R's
  ``subbootweights``). Drawn with numpy's `Generator`, so R's bits are not reproduced.

For a `CalibratedDesign` the replicate columns are built from its ``base_weights`` and every
weighting `Step` is replayed on each column in order, as R's ``postStratify``/``rake``/``calibrate``
re-weight each replicate of a replicate design: the replicate SEs reflect the weighting, and
calibrating then replicating gives the same numbers as R's replicating then calibrating.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from impactstudy.estimate import Design, Replicates

from .calibrate import CalibratedDesign, Step, WeightingError

__all__ = [
    "ReplicateType",
    "hadamard",
    "jk1",
    "replicate",
    "replicate_df",
    "reweight_replicates",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ReplicateType = Literal["auto", "JK1", "JKn", "BRR", "Fay", "bootstrap", "subbootstrap"]
_TYPES = ("auto", "JK1", "JKn", "BRR", "Fay", "bootstrap", "subbootstrap")
_RANK_TOL = 1e-5  # R's degf.svyrep.design: qr(weights, tol = 1e-05)$rank - 1

# R survey's precooked Hadamard matrices (survey:::hadamard.list, 0/1 entries), one hex number a row
_PRECOOKED_HEX: dict[int, str] = {
    4: ("f a c 9 "),
    16: ("ffff aaaa cccc 9999 f0f0 a5a5 c3c3 9696 ff00 aa55 cc33 9966 f00f a55a c33c 9669 "),
    28: (
        "fffffff 9c71c78 83cd378 83b2e66 9a0f8d6 952c5ae 8cd239e 58aa7f0 45b59d4 46cbcac 561774a "
        "4b64e9a 5959b26 2d1eae8 3666b34 2b3b51c 31d74b2 32f89ca 2ced646 ea545e4 f1632cc f09ce1c "
        "e54ad52 e6392b2 e8a792a dffe000 bf81f80 7f8007e "
    ),
    36: (
        "fffffffff 5c7dc8564 b8fb90ac8 71f721592 e3ee42b24 c7dc8564a 8fb90ac96 1f721592e 3ee42b25c "
        "7dc8564b8 fb90ac970 f721592e2 ee42b25c6 dc8564b8e b90ac971e 721592e3e e42b25c7c c8564b8fa "
        "90ac971f6 21592e3ee 42b25c7dc 8564b8fb8 0ac971f72 1592e3ee4 2b25c7dc8 564b8fb90 ac971f720 "
        "592e3ee42 b25c7dc84 64b8fb90a c971f7214 92e3ee42a 25c7dc856 4b8fb90ac 971f72158 2e3ee42b2 "
    ),
}
_PRECOOKED_SIZES = (4, 16, 28, 36)


def _precooked(size: int) -> IntArray:
    rows = _PRECOOKED_HEX[size].split()
    bits = [[int(b) for b in format(int(r, 16), f"0{size}b")] for r in rows]
    return np.array(bits, dtype=np.int64)


def _primes_3_mod_4(limit: int) -> tuple[int, ...]:
    """Primes p = 3 (mod 4) up to ``limit``: R's ``small.primes`` in ``paley`` (up to 7919)."""
    sieve = np.ones(limit + 1, dtype=bool)
    sieve[:2] = False
    for i in range(2, math.isqrt(limit) + 1):
        if sieve[i]:
            sieve[i * i :: i] = False
    primes = np.flatnonzero(sieve)
    return tuple(int(p) for p in primes[primes % 4 == 3])


_SMALL_PRIMES = _primes_3_mod_4(7919)


def _doubler(h: IntArray) -> IntArray:
    """R's ``hadamard.doubler``: ``rbind(cbind(H, H), cbind(H, 1 - H))``."""
    return np.block([[h, h], [h, 1 - h]])


def _paley_prime(p: int) -> IntArray:
    """R's Paley construction for a prime ``p = 3 (mod 4)``: a (p+1) x (p+1) 0/1 matrix."""
    idx = np.arange(p)
    m = (idx[:, None] + idx[None, :]) % p
    residues = np.array([0, 1] + [(i * i) % p for i in range(2, (p - 1) // 2 + 1)])
    body = np.where(np.isin(m, residues), 0, 1)
    out = np.ones((p + 1, p + 1), dtype=np.int64)
    out[1:, 1:] = body
    return out


def _paley(n: int, nmax: int) -> IntArray | None:
    """R's ``paley(n, nmax)``: a Paley Hadamard matrix of order at least n + 1, or None."""
    nceil = nn = n + 4 - (n % 4)
    if (n % 4) + 4 == n % 8:
        while nn % 8 == 0:
            nn //= 2
        if nn - 1 in _SMALL_PRIMES:
            m = _paley_prime(nn - 1)
            while nn < nceil:
                m = _doubler(m)
                nn *= 2
            return m
    if n > _SMALL_PRIMES[-1]:
        return None
    p = min(q for q in _SMALL_PRIMES if q >= n)
    if p + 1 > nceil + 4 and nceil + 4 < nmax:
        return _paley(nceil + 3, 2 * (nceil + 3))
    if p > nmax:
        return None
    return _paley_prime(p)


def hadamard(n: int) -> IntArray:
    """The 0/1 Hadamard matrix R survey uses for BRR with ``n`` strata (``survey:::hadamard(n)``).

    Its order (the number of replicates) is the smallest R finds above ``n``: a precooked matrix of
    order 4, 16, 28 or 36, a Paley matrix, or a doubled precooked one, exactly as R chooses, so the
    half samples, and the SEs of non-linear estimates, equal R's.
    """
    if n < 0:
        raise WeightingError(f"hadamard needs n >= 0, got {n}")
    m = n - n % 4
    fits = [s for s in _PRECOOKED_SIZES if m < s <= m + 4]
    if fits:
        return _precooked(min(fits))
    sizes = [s * 2 ** max(0, math.ceil(math.log2((n + 1) / s))) for s in _PRECOOKED_SIZES]
    best = int(np.argmin([s - n for s in sizes]))
    h = _paley(n, sizes[best]) if sizes[best] - n > 4 else None
    if h is None:
        h = _precooked(_PRECOOKED_SIZES[best])
        for _ in range(math.ceil(math.log2(sizes[best] / _PRECOOKED_SIZES[best]))):
            h = _doubler(h)
    return h


def _stratum_labels(design: Design) -> list[str]:
    """The label of each first-stage stratum code (its value in the strata column)."""
    first = design.stages[0]
    n_strata = int(first.stratum.max()) + 1
    if not design.strata:
        return ["(unstratified)"] * n_strata
    rows = np.unique(first.stratum, return_index=True)[1]
    col = design.data.get_column(design.strata[0]).cast(pl.String)
    return [str(v) for v in col.gather(rows.tolist()).to_list()]


def _psu_layout(design: Design) -> tuple[IntArray, IntArray, IntArray]:
    """First-stage PSUs in R's order (strata by first appearance, PSUs by first appearance within
    their stratum): the PSU codes in that order, each PSU's stratum code and its number of PSUs."""
    first = design.stages[0]
    psu_stratum = first.stratum[first.psu_first]  # indexed by PSU code
    stratum_first_row = np.full(int(psu_stratum.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(stratum_first_row, psu_stratum, first.psu_first)
    order = np.lexsort((first.psu_first, stratum_first_row[psu_stratum])).astype(np.int64)
    n_h = np.bincount(psu_stratum)[psu_stratum].astype(np.int64)
    return order, psu_stratum, n_h


def _first_stage_fpc(design: Design) -> FloatArray:
    """R's per-stratum fpc factor ``(N_h - n_h) / N_h`` by PSU code (1 without an fpc)."""
    first = design.stages[0]
    pop = first.pop_size[first.psu_first]
    n = first.n_sampled[first.psu_first]
    out: FloatArray = np.where(np.isinf(pop), 1.0, (pop - n) / np.where(np.isinf(pop), 1.0, pop))
    return out


def _jackknife(design: Design, stratified: bool) -> tuple[FloatArray, float, FloatArray]:
    """PSU x replicate factors, scale and rscales of JK1 (``stratified=False``) or JKn."""
    order, psu_stratum, n_h = _psu_layout(design)
    fpc = _first_stage_fpc(design)
    labels = _stratum_labels(design)
    n_psu = order.size
    if not stratified:
        if n_psu < 2:
            raise WeightingError("JK1 needs at least two PSUs")
        if fpc[0] == 0:
            raise WeightingError("JK1: every PSU is in the sample (fpc), so there is no variance")
        factors = np.full((n_psu, n_psu), n_psu / (n_psu - 1))
        factors[order, np.arange(n_psu)] = 0.0
        return factors, float(fpc[0] * (n_psu - 1) / n_psu), np.ones(n_psu)
    # JKn: one replicate per PSU of each stratum not sampled exhaustively (R drops the others);
    # a stratum with one PSU follows the design's lonely_psu rule as R's jknweights does
    rule = getattr(design, "lonely_psu", "fail")
    keep = order[fpc[order] != 0]
    lonely = n_h[keep] == 1
    if lonely.any() and rule == "fail":
        names = sorted({labels[int(psu_stratum[p])] for p in keep[lonely]})
        raise WeightingError(
            f"JKn: strata {names} have only one PSU (lonely PSU; lonely_psu='fail')"
        )
    if rule != "adjust":  # "remove", "certainty", "average": the lonely stratum has no replicate
        keep, lonely = keep[~lonely], lonely[~lonely]
    if keep.size == 0:
        raise WeightingError("JKn: every stratum is sampled exhaustively (fpc): no variance")
    n_strata = len(labels)
    if lonely.any() and n_strata < 2:
        raise WeightingError("JKn: lonely_psu='adjust' needs more than one stratum")
    cols = np.arange(keep.size)
    same = psu_stratum[:, None] == psu_stratum[keep][None, :]  # PSU in the replicate's stratum
    nk = n_h[keep].astype(np.float64)
    with np.errstate(divide="ignore"):
        inside = np.where(lonely, 0.0, nk / (nk - 1))
        # "adjust": the lonely PSU's replicate drops it and scales every other PSU by H / (H - 1)
        outside = np.where(lonely, n_strata / max(n_strata - 1, 1), 1.0)
    factors = np.where(same, inside[None, :], outside[None, :])
    factors[keep, cols] = 0.0
    rscales: FloatArray = np.where(
        lonely, (n_strata - 1) / n_strata, fpc[keep] * (nk - 1) / np.where(lonely, 1.0, nk)
    )
    # R: "average" scales up by all PSUs over the replicates kept (certainty strata included)
    scale = n_psu / keep.size if rule == "average" and keep.size < n_psu else 1.0
    return factors, scale, rscales


def _brr(design: Design, rho: float) -> tuple[FloatArray, float, FloatArray]:
    """PSU x replicate factors and scale of BRR (``rho=0``) or Fay's method (R's ``brrweights``).

    Strata are taken in the order of their labels (R sorts them as strings) and matched to rows
    2, 3, ... of `hadamard`; within a stratum the PSUs are in order of first appearance. In
    replicate i the first PSU gets ``2 - rho`` when H[1 + k, i] is 1, else ``rho``; the second
    the other.
    """
    order, psu_stratum, _ = _psu_layout(design)
    labels = _stratum_labels(design)
    n_strata = len(labels)
    counts = np.bincount(psu_stratum, minlength=n_strata)
    bad = [f"{labels[h]} ({counts[h]} PSUs)" for h in range(n_strata) if counts[h] != 2]
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise WeightingError(f"BRR needs exactly 2 PSUs in every stratum; strata {shown}")
    rank = np.empty(n_strata, dtype=np.int64)  # each stratum's position in label order
    rank[sorted(range(n_strata), key=lambda h: labels[h])] = np.arange(n_strata)
    position = np.empty(order.size, dtype=np.int64)  # 0: first PSU of its stratum, 1: second
    ordered_strata = psu_stratum[order]
    position[order] = np.r_[0, (ordered_strata[1:] == ordered_strata[:-1]).astype(np.int64)]
    h = hadamard(n_strata)
    bits = h[1 + rank[psu_stratum], :]  # PSU x replicate
    chosen = (bits == 1) == (position == 0)[:, None]
    factors = np.where(chosen, 2.0 - rho, rho)
    n_rep = h.shape[1]
    return factors, 1.0 / (n_rep * (1.0 - rho) ** 2), np.ones(n_rep)


def _bootstrap(
    design: Design, replicates: int, rng: np.random.Generator, sub: bool
) -> tuple[FloatArray, float, FloatArray]:
    """PSU x replicate factors and scale of R's ``bootweights`` or (``sub``) ``subbootweights``."""
    if replicates < 2:
        raise WeightingError(f"the bootstrap needs at least 2 replicates, got {replicates}")
    _, psu_stratum, _ = _psu_layout(design)
    first = design.stages[0]
    pop = first.pop_size[first.psu_first]
    labels = _stratum_labels(design)
    factors = np.empty((psu_stratum.size, replicates))
    for h in range(len(labels)):  # one draw per stratum, vectorised over its PSUs and replicates
        psus = np.flatnonzero(psu_stratum == h)
        n = psus.size
        if sub:
            if n < 2:
                raise WeightingError(f"subbootstrap: stratum {labels[h]!r} has only one PSU")
            counts = rng.multinomial(n - 1, np.full(n, 1.0 / n), size=replicates)
            factors[psus, :] = counts.T * (n / (n - 1))
        elif np.isinf(pop[psus[0]]):
            factors[psus, :] = rng.multinomial(n, np.full(n, 1.0 / n), size=replicates).T
        else:
            # R: sample n of rep(sample(PSUs), length = N_h) without replacement
            size = math.floor(pop[psus[0]] + 1e-9)
            copies = np.full(n, size // n, dtype=np.int64)
            copies[rng.permutation(n)[: size % n]] += 1
            factors[psus, :] = rng.multivariate_hypergeometric(copies, n, size=replicates).T
    if sub:
        return factors, 1.0 / (replicates - 1), np.ones(replicates)
    nbar = 1.0 / float(np.mean(1.0 / np.bincount(psu_stratum)))
    if nbar <= 1:
        raise WeightingError("the bootstrap needs strata with more than one PSU")
    return factors, nbar / ((nbar - 1.0) * (replicates - 1)), np.ones(replicates)


def replicate(
    design: Design,
    type: ReplicateType = "auto",  # R's argument name
    *,
    mse: bool = False,
    rho: float = 0.0,
    replicates: int = 50,
    seed: int | np.random.Generator | None = None,
) -> Design:
    """The design with replicate weights (R ``as.svrepdesign(design, type, fay.rho, replicates,
    mse)``), re-weighted through every weighting step of a `CalibratedDesign`.

    ``type``: ``"auto"`` (R's default: JK1 without strata, JKn with), ``"JK1"``, ``"JKn"``,
    ``"BRR"``, ``"Fay"`` (with ``0 < rho < 1``), ``"bootstrap"`` or ``"subbootstrap"`` (with
    ``replicates`` columns drawn from ``seed``: the same seed gives the same weights). Replicates
    come from the first stage (R drops later-stage fpcs). ``mse=False`` (R 4.1's default
    ``survey.replicates.mse``) centres the variance on the mean of the replicate estimates,
    ``mse=True`` on the full-sample estimate.

    For a `CalibratedDesign` the replicate columns start from ``base_weights`` and each `Step` is
    replayed on every column in order, so the replicate variance reflects the weighting; the point
    estimates use the calibrated weights.
    """
    if type not in _TYPES:
        raise WeightingError(f"unknown replicate type {type!r}; use one of {list(_TYPES)}")
    stratified = bool(design.strata)
    if type == "auto":
        type = "JKn" if stratified else "JK1"
    if type == "Fay":
        if not 0.0 < rho < 1.0:
            raise WeightingError(f"Fay's method needs 0 < rho < 1, got rho={rho}")
    elif rho != 0.0:
        raise WeightingError(f"rho is Fay's coefficient; it needs type='Fay', not {type!r}")
    if type == "JK1" and stratified:
        raise WeightingError("JK1 is for unstratified designs; use JKn for a stratified one")
    if type in ("JKn", "BRR", "Fay") and not stratified:
        raise WeightingError(f"{type} needs a stratified design; use JK1 or bootstrap")

    if type in ("JK1", "JKn"):
        factors, scale, rscales = _jackknife(design, stratified=type == "JKn")
    elif type in ("BRR", "Fay"):
        factors, scale, rscales = _brr(design, rho)
    else:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        factors, scale, rscales = _bootstrap(design, replicates, rng, sub=type == "subbootstrap")

    # replicate x row (each replicate's column contiguous), returned transposed as rows x replicates
    base = design.base_weights if isinstance(design, CalibratedDesign) else design.weights
    by_replicate = np.take(np.ascontiguousarray(factors.T), design.stages[0].psu, axis=1)
    by_replicate *= base[None, :]
    if isinstance(design, CalibratedDesign):
        for step in design.steps:
            _reweight_rows(by_replicate, step.name, step.reweight)
    weights: FloatArray = by_replicate.T
    return design.with_replicates(Replicates(weights, scale, rscales, mse=mse, type=type))


def _reweight_rows(
    by_replicate: FloatArray, name: str, reweight: Callable[[FloatArray], FloatArray]
) -> None:
    """Replay one weighting step on every replicate (rows of ``by_replicate``), in place."""
    for r in range(by_replicate.shape[0]):  # each replicate, vectorised over the sample's rows
        try:
            by_replicate[r] = reweight(by_replicate[r])
        except WeightingError as err:
            raise WeightingError(f"replicate {r + 1}, {name}: {err}") from err
    if not np.all(np.isfinite(by_replicate)):
        raise WeightingError(f"{name} gave replicate weights that are not finite")


def reweight_replicates(replicates: Replicates, step: Step) -> Replicates:
    """``replicates`` with every replicate column re-weighted by ``step`` (its ``reweight``): what
    R's ``postStratify``/``rake``/``calibrate`` do to a replicate design. For weighting a design
    that already carries replicates (`CalibratedDesign.derive`), so that weighting after
    `replicate` gives the same replicate weights as `replicate` after weighting."""
    by_replicate = np.ascontiguousarray(replicates.weights.T)
    _reweight_rows(by_replicate, step.name, step.reweight)
    return dataclasses.replace(replicates, weights=by_replicate.T)


def jk1(design: Design) -> Design:
    """JK1 replicate weights of an unstratified design: ``replicate(design, "JK1")``."""
    return replicate(design, "JK1")


def _rank(x: FloatArray, tol: float) -> int:
    """Rank of ``x`` as R's ``qr(x, tol)$rank``: LINPACK ``dqrdc2``, Householder QR with limited
    pivoting, whose column norms are downdated as it goes; a column whose remaining norm falls
    below ``tol`` times its original norm is moved to the end and not counted.

    Followed step by step (one step per column, vectorised over rows and columns) because near
    the tolerance the rank depends on those downdated norms: a Gram-matrix or SVD rank differs
    from R's on calibrated replicate weights. Every quantity dqrdc2 tests (norms, and the
    entries of the triangular factor) is invariant under an orthogonal transformation of the
    rows, so with more rows than columns it runs on the R x R triangular factor of one LAPACK QR
    of ``x`` instead of on ``x`` (seconds rather than minutes for 200,000 x 400).
    """
    n_rows, n_cols = x.shape
    a = np.linalg.qr(x, mode="r") if n_rows > n_cols else np.array(x, dtype=np.float64)
    a = np.array(a, dtype=np.float64, copy=True)
    n, p = a.shape
    qraux = np.sqrt((a * a).sum(axis=0))
    original = np.where(qraux == 0, 1.0, qraux)
    kept = int(p)  # columns kept..p-1 have been moved to the end as negligible
    for col in range(min(n, p)):
        while col < kept and qraux[col] < original[col] * tol:
            order = np.r_[np.arange(col), np.arange(col + 1, p), col]
            a, qraux, original = a[:, order], qraux[order], original[order]
            kept -= 1
        if col == n - 1:
            break
        v = a[col:, col]
        nrm = float(np.sqrt(v @ v))
        if nrm == 0:
            continue
        if a[col, col] != 0:
            nrm = abs(nrm) * float(np.sign(a[col, col]))
        v /= nrm
        v[0] += 1.0
        rest = a[col:, col + 1 :]
        rest += np.outer(v, -(v @ rest) / v[0])
        q = qraux[col + 1 :]
        nonzero = q != 0
        t = np.ones_like(q)
        t[nonzero] = np.maximum(1.0 - (np.abs(rest[0, nonzero]) / q[nonzero]) ** 2, 0.0)
        recompute = nonzero & (t < 1e-6)
        q[nonzero & ~recompute] *= np.sqrt(t[nonzero & ~recompute])
        q[recompute] = np.sqrt((rest[1:, recompute] ** 2).sum(axis=0))
        qraux[col] = v[0]
        a[col, col] = -nrm
    return min(kept, int(n))


def replicate_df(design: Design) -> int:
    """Degrees of freedom of a replicate design (R's ``degf`` of an ``svyrep.design``): the rank of
    the replicate weights, as R's ``qr(tol = 1e-05)``, minus one. Costs a QR of the n x R weights,
    so it is computed only when asked for."""
    rep = design.replicates
    if rep is None:
        raise WeightingError("the design has no replicate weights; use replicate() first")
    return _rank(rep.weights, _RANK_TOL) - 1
