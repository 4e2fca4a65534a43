"""The ASAS-SN catalogue's photo features measured from a light curve itself.

`derive(t, mag, mag_err)`: `period` (days, orbital for eclipsing binaries),
`amplitude` (98th - 2nd percentile of mag, as the catalogue and the synthetic
survey define it), `lksl_statistic` (synthetic.lightcurves.lafler_kinman at
that period) and `period_power` (normalised Lomb-Scargle power, 0..1, of the
peak the period came from, or at the period of a box fold (step 4); below
~0.2 little better than noise, except for narrow eclipses). Period:

1. Search: astropy LombScargle, error-weighted (0.02 mag floor), `fast`
   method with Press-Rybicki extirpolation (`fasper`: ~5x faster than the
   default low-rank NUFFT, ample for a peak search) on 1/min(1000 d,
   baseline) .. 1/0.025 d in steps of 1/(2 baseline); the 3 N_PEAKS highest
   maxima are re-measured exactly, the N_PEAKS best kept. Curves with a few
   deep dips (detached eclipses) are searched again on the dips alone.
2. Choice: each peak f, its 1/day aliases and subharmonics (f - m)/n (m = -1,
   0, 1; n <= 6; >= MANY_CYCLES cycles), 1/year aliases of slow peaks;
   the lowest BIC of a multi-harmonic fit wins (a subharmonic must pay for
   its extra harmonics: unequal eclipses). Below FEW_CYCLES cycles: <= K_FEW
   harmonics, the first the strongest (else: a slow trend plus the true
   period). The best are refined (few-cycle ones with a piecewise-linear
   trend for Mira cycle-to-cycle mean changes).
3. Doubling (Lomb-Scargle finds half the orbital period of binaries) if
   (a) >= MANY_CYCLES cycles and the fold at 2P is smoother: (1 - LK(2P) /
       LK(P)) sqrt(N) > LK_DOUBLE_Z (LK scatter ~ 1/sqrt(N); a pulsator only
       gets rougher at 2P), a lower bar for curves with eclipse-like dips; or
   (b) equal minima (EW, some EB) by shape: 0.1 <= P <= 1 d (close binaries:
       P_orb 0.22-2 d), power >= EW_MIN_POWER, A2 < A1, a time-symmetric fold
       (RRc/HADS rise faster than they fall), minima sharper than maxima
       where the S/N can show it (a delta Scuti sinusoid has no second
       harmonic) and no second period in the residuals (multi-mode delta
       Scuti). A faint sinusoid of 0.1-1 d is still doubled (in ASAS-SN
       mostly EW).
4. Detached eclipses (curves with dips), before step 3: eclipses a few
   per cent of the orbit wide defeat the harmonic fits, so the dip times'
   periodicities and their submultiples are also scored by the box
   least-squares statistic; a fold BOX_SWITCH times better replaces the
   choice. If its even and odd eclipses differ in depth (primary and
   secondary folded together), the period is doubled and step 3 skipped.
Thresholds were tuned on synthetic stars (seed 0); the benchmark uses seed 11.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.linalg
from astropy.timeseries import LombScargle

from astrom3_jax.data.synthetic.lightcurves import lafler_kinman

P_MIN, P_MAX, YEAR = 0.025, 1000.0, 365.25  # days: delta Scuti to long Miras
MIN_POINTS, N_PEAKS, OVERSAMPLE = 20, 8, 2  # grid step 1/(OVERSAMPLE baseline)
K_MAX, K_FEW, FEW_CYCLES = 20, 4, 12  # harmonics; for < FEW_CYCLES cycles
MANY_CYCLES = 40  # for subharmonics and doubling rule (a): not irregular SR
ERR_FLOOR, DIP_SIGMA = 0.02, 3.0  # mag floor added to mag_err; dip threshold
LK_DOUBLE_Z, LK_DOUBLE_Z_DIPS = 2.0, 0.5  # doubling rule (a)
EW_RANGE, EW_ASYMMETRY, EW_MIN_POWER = (0.1, 1.0), 0.12, 0.2  # doubling rule (b)
EW_MAX_R21, EW_MAX_RESIDUAL_POWER = 1.0, 0.3
EW_SHARP_PER_Z, EW_SHARP_MAX = 0.04, 1.0  # rule 3b: minima sharper than maxima
# Detached eclipses (step 4): box widths (phase), the dip peaks' submultiples
# tried, how much better a box fold must be to replace the harmonic choice,
# and the even/odd eclipse-depth test that doubles the period.
BOX_WIDTHS, BOX_MIN_POINTS = (0.01, 0.02, 0.04, 0.08, 0.16), 3
DIP_PEAKS, DIP_SUBMULTIPLES, BOX_SWITCH = 3, 40, 1.2
EVEN_ODD_Z, EVEN_ODD_MIN_POINTS, EVEN_ODD_BINS = 4.0, 4, 6


# astropy LombScargle(...).power(..., method="fast", method_kwds=FASPER):
# Press-Rybicki extirpolation at 2x, enough for locating peaks.
FASPER = {"algorithm": "fasper", "trig_sum_kwds": {"oversampling": 2}}


class FeatureError(ValueError):
    """The light curve cannot give the features (the message says why)."""


def _clean(t, mag, mag_err):
    t, mag, err = (np.asarray(a, float).ravel() for a in (t, mag, mag_err))
    if not len(t) == len(mag) == len(err):
        raise FeatureError(
            f"t, mag, mag_err lengths differ: {len(t)}, {len(mag)}, {len(err)}"
        )
    if not (np.isfinite(t).all() and np.isfinite(mag).all()):
        raise FeatureError("t and mag must be finite: clean the light curve first")
    if len(t) < MIN_POINTS:
        raise FeatureError(f"{len(t)} points: at least {MIN_POINTS} are needed")
    if np.ptp(t) <= 0:
        raise FeatureError("zero baseline: every point has the same time")
    if np.ptp(mag) <= 0:
        raise FeatureError("constant light curve: every point has the same value")
    good = np.isfinite(err) & (err > 0)
    err = np.where(good, err, np.median(err[good]) if good.any() else 0.05)
    order = np.argsort(t, kind="stable")
    return t[order], mag[order], np.hypot(err[order], ERR_FLOOR)


def _peaks(t, y, sig):
    """The N_PEAKS highest Lomb-Scargle peaks: frequencies, powers, grid step.

    A fast approximate periodogram on the coarse grid finds 3 x N_PEAKS local
    maxima; the exact periodogram on a finer grid around each ranks them."""
    span = t[-1] - t[0]
    df, f0 = 1.0 / (OVERSAMPLE * span), 1.0 / min(P_MAX, span)
    nf = max(int((1.0 / P_MIN - f0) / df), 3)
    ls = LombScargle(t, y, sig)
    p = ls.power(
        f0 + df * np.arange(nf), method="fast", assume_regular_frequency=True,
        method_kwds=FASPER,
    )  # fmt: skip
    loc = np.flatnonzero((p[1:-1] > p[:-2]) & (p[1:-1] >= p[2:])) + 1
    loc = loc[np.argsort(p[loc])[::-1][: 3 * N_PEAKS]] if len(loc) else [np.argmax(p)]
    fine = (f0 + df * np.asarray(loc))[:, None] + df * np.linspace(-1, 1, 9)
    fine = np.maximum(fine, f0)
    pf = ls.power(fine.ravel(), method="cython").reshape(fine.shape)
    j = np.clip(np.argmax(pf, axis=1), 1, fine.shape[1] - 2)
    r = np.arange(len(j))
    lo, mid, hi = pf[r, j - 1], pf[r, j], pf[r, j + 1]
    curv = lo - 2 * mid + hi
    shift = np.where(curv < 0, 0.5 * (lo - hi) / np.where(curv < 0, curv, -1.0), 0.0)
    f = fine[r, j] + np.clip(shift, -0.5, 0.5) * df / 4
    keep = np.argsort(mid)[::-1][:N_PEAKS]
    return f[keep], mid[keep], df


def _dips(y):
    """1 at points well below the star's usual brightness, else 0; None when
    there are too few such points (or too many: not an eclipsing light curve)."""
    med = np.median(y)
    dip = y - med > DIP_SIGMA * 1.4826 * np.median(np.abs(y - med))
    enough = max(3, 0.02 * len(y)) <= dip.sum() <= 0.25 * len(y)
    return dip.astype(float) if enough else None


def harmonic_design(t, f, k, base=None):
    """Columns: base (a constant if None), then cos/sin of harmonics 1..k."""
    ph = (2 * np.pi * f * t)[:, None] * np.arange(1, k + 1)
    base = np.ones((len(t), 1)) if base is None else base
    x = np.empty((len(t), base.shape[1] + 2 * k))
    x[:, : base.shape[1]] = base
    x[:, base.shape[1] :: 2], x[:, base.shape[1] + 1 :: 2] = np.cos(ph), np.sin(ph)
    return x


@functools.cache
def _gram_index(k):
    """Where the trig sums go in the normal matrix of columns 1, cos, sin, ..."""
    h = np.r_[0, np.repeat(np.arange(1, k + 1), 2)]  # harmonic of each column
    sin = np.r_[False, np.tile([False, True], k)]
    hj, hk = np.meshgrid(h, h, indexing="ij")
    sj, sk = np.meshgrid(sin, sin, indexing="ij")
    # cos cos = (C- + C+)/2, sin sin = (C- - C+)/2, cos_j sin_k = (S+ + S_(k-j))/2
    c_minus = np.where(sj == sk, 1.0, 0.0)
    c_plus = np.where(sj == sk, np.where(sj, -1.0, 1.0), 0.0)
    s_plus = np.where(sj != sk, 1.0, 0.0)
    s_minus = np.where(sk & ~sj, 1.0, np.where(sj & ~sk, -1.0, 0.0)) * np.sign(hk - hj)
    return h, sin, np.abs(hj - hk), hj + hk, (c_minus, c_plus, s_plus, s_minus)


def _normal(t, w2, yw2, f, k):
    """Normal equations of the weighted harmonic fit from trig sums, O(N k)."""
    powers = np.cumprod(np.broadcast_to(np.exp(2j * np.pi * f * t), (2 * k, len(t))), 0)
    s = np.r_[w2.sum(), powers @ w2]  # sum w2 exp(i m theta), m = 0..2k
    yk = np.r_[yw2.sum(), powers[:k] @ yw2]
    h, sin, minus, plus, (cm, cp, sp, sm) = _gram_index(k)
    gram = 0.5 * (cm * s[minus].real + cp * s[plus].real + sp * s[plus].imag
                  + sm * s[minus].imag)  # fmt: skip
    return gram, np.where(sin, yk[h].imag, yk[h].real)


def _fit(t, yw, w, f, k, base=None):
    """Weighted chi2 with 0..k harmonics, and what _amplitudes needs."""
    if base is None:
        gram, rhs = _normal(t, w * w, yw * w, f, k)
        nb = 1
    else:
        x = harmonic_design(t, f, k, base) * w[:, None]
        nb = x.shape[1] - 2 * k
        gram, rhs = x.T @ x, x.T @ yw
    gram[np.diag_indices_from(gram)] += 1e-9 * np.trace(gram) / len(gram)  # ridge
    chol = np.linalg.cholesky(gram)
    z = scipy.linalg.solve_triangular(chol, rhs, lower=True)
    chi2 = float(yw @ yw) - np.cumsum(z**2)[nb - 1 :: 2]
    return chi2, chol, z, nb


def _amplitudes(chol, z, nb, k):
    m = nb + 2 * k
    beta = scipy.linalg.solve_triangular(chol[:m, :m].T, z[:m])
    cos, sin = beta[nb::2], beta[nb + 1 :: 2]
    return np.hypot(cos, sin), np.arctan2(-sin, cos)  # y = A cos(k theta + phase)


def _trend(t, f):
    """Piecewise-linear trend, a knot per cycle, for few-cycle periods (Mira
    cycle-to-cycle mean changes); None (a constant) otherwise."""
    span = t[-1] - t[0]
    if span * f >= FEW_CYCLES:
        return None
    knots = np.linspace(t[0], t[-1], int(np.ceil(span * f)) + 1)
    return np.stack([np.interp(t, knots, e) for e in np.eye(len(knots))], axis=1)


def _score(t, yw, w, f, k_max):
    """(BIC of the best harmonic fit, its number of harmonics); inf if rejected."""
    few = (t[-1] - t[0]) * f < FEW_CYCLES
    k_max = min(k_max, K_FEW) if few else k_max
    chi2, chol, z, nb = _fit(t, yw, w, f, k_max)
    n, n_par = len(t), 2 * np.arange(k_max + 1) + nb
    bic = n * np.log(np.maximum(chi2, 1e-300) / n) + n_par * np.log(n)
    k = int(np.argmin(bic[1:])) + 1
    if few and k > 1 and np.argmax(_amplitudes(chol, z, nb, k)[0]) != 0:
        return np.inf, k
    return float(bic[k]), k


def _refine(t, yw, w, f, k, width, base, n=13, rounds=3):
    """Minimum-chi2 frequency near f."""
    for _ in range(rounds):
        grid = f + np.linspace(-width, width, n)
        grid = grid[grid > 0]
        f = float(grid[np.argmin([_fit(t, yw, w, g, k, base)[0][k] for g in grid])])
        width *= 2 / (n - 1)
    return f


def _sharp_minima(w, amp, rel2):
    """Whether the fold's faint side is narrower than its bright side, as an
    EW's minima are (a second harmonic in phase with the first's faint
    peak), at the significance its S/N allows. A delta Scuti sinusoid has
    none: without this, many 0.1-0.25 d ones were doubled as EW. The bar is
    EW_SHARP_PER_Z z-units per z-unit of the first harmonic (an EW's
    A2/A1 >= 0.08, so a bright one clears it easily), at most EW_SHARP_MAX;
    faint curves, where neither is measurable, keep the EW prior."""
    sd = np.sqrt(2 / np.sum(w * w))  # of a harmonic's amplitude (mag)
    bar = min(EW_SHARP_PER_Z * amp[0] / sd, EW_SHARP_MAX)
    return amp[1] * np.cos(rel2) / sd > bar


def _ew_like(t, y, yw, w, f, power):
    """Equal-minima contact-binary shape at period 1/f (rule 3b)."""
    if not (EW_RANGE[0] <= 1 / f <= EW_RANGE[1] and power >= EW_MIN_POWER):
        return False
    _, chol, z, nb = _fit(t, yw, w, f, 4)
    amp, phase = _amplitudes(chol, z, nb, 4)
    rel = phase[1:] - np.arange(2, 5) * phase[0]
    asym = np.sqrt(np.sum((amp[1:] * np.sin(rel)) ** 2))
    if amp[1] >= EW_MAX_R21 * amp[0] or asym >= EW_ASYMMETRY * amp[0]:
        return False
    if not _sharp_minima(w, amp, rel[0]):
        return False
    beta = scipy.linalg.solve_triangular(chol.T, z)
    resid = y - harmonic_design(t, f, 4) @ beta
    return _peaks(t, resid, 1 / w)[1][0] < EW_MAX_RESIDUAL_POWER  # one period only


def _box(t, y, w2, f):
    """(delta chi2, centre phase, width) of the best box-shaped dip (fainter
    inside) in the fold at frequency f, over BOX_WIDTHS: the box
    least-squares statistic, which a narrow eclipse maximises at the orbital
    period (a harmonic fit of 20 terms cannot follow an eclipse 1 % of the
    orbit wide; at a multiple of the orbital frequency the box also holds
    out-of-eclipse points)."""
    phase = (t * f) % 1.0
    order = np.argsort(phase)
    phase, wy = phase[order], (w2 * y)[order]
    n = len(t)
    cw = np.r_[0.0, np.cumsum(np.tile(w2[order], 2))]
    cs = np.r_[0.0, np.cumsum(np.tile(wy, 2))]
    total_w, total_s = cw[n], cs[n]
    start = np.arange(n)
    best = (0.0, 0.0, BOX_WIDTHS[0])
    for q in BOX_WIDTHS:
        end = np.searchsorted(np.r_[phase, phase + 1.0], phase + q)
        in_w, in_s = cw[end] - cw[start], cs[end] - cs[start]
        out_w, out_s = total_w - in_w, total_s - in_s
        ok = (end - start >= BOX_MIN_POINTS) & (out_w > 0)
        in_w, out_w = np.where(ok, in_w, 1.0), np.where(ok, out_w, 1.0)
        gain = in_s**2 / in_w + out_s**2 / out_w - total_s**2 / total_w
        gain = np.where(ok & (in_s / in_w > out_s / out_w), gain, 0.0)
        j = int(np.argmax(gain))
        if gain[j] > best[0]:
            best = (float(gain[j]), (phase[j] + q / 2) % 1.0, q)
    return best


def _dip_fundamentals(t, dips, dip_peaks, f_lo, df):
    """Candidate orbital frequencies of a curve with eclipse-like dips: the
    dip times' strongest periodicities, sharpened on a grid 100 times finer
    (the fold of a 1 %-wide eclipse must stay in phase over the baseline),
    and their submultiples. A comb of narrow dips has nearly equal power at
    every harmonic of the orbit, so the strongest peak is often a high one."""
    times = t[dips > 0]
    out = []
    for fd in dip_peaks[:DIP_PEAKS]:
        grid = fd + np.linspace(-df, df, 201)
        power = np.abs(np.exp(2j * np.pi * grid[:, None] * times).sum(axis=1))
        fd = grid[np.argmax(power)]
        out += [fd / n for n in range(1, DIP_SUBMULTIPLES + 1) if fd / n >= f_lo]
    return out


def _depths_alternate(t, y, f, centre, width):
    """Whether the eclipses of even and odd cycles of the fold at f differ in
    depth: then f is twice the orbital frequency, primary and secondary
    folded onto each other. Each parity's depth is the scale of the shared
    eclipse profile (mean of the box's points in EVEN_ODD_BINS phase bins)
    that fits its points best, so where in the eclipse a point fell does
    not count as a difference; they differ when the scales do by more than
    EVEN_ODD_Z standard errors."""
    cycle = t * f - centre
    offset = cycle - np.round(cycle)
    inside = np.abs(offset) < width / 2
    if inside.sum() < 2 * EVEN_ODD_MIN_POINTS or inside.all():
        return False
    depth = y[inside] - np.median(y[~inside])
    bins = np.minimum(((offset[inside] / width + 0.5) * EVEN_ODD_BINS).astype(int),
                      EVEN_ODD_BINS - 1)  # fmt: skip
    sums = np.bincount(bins, depth, EVEN_ODD_BINS)
    profile = (sums / np.maximum(np.bincount(bins, minlength=EVEN_ODD_BINS), 1))[bins]
    parity = np.round(cycle[inside]).astype(int) % 2
    scales, variances = [], []
    for p in (0, 1):
        x, d = profile[parity == p], depth[parity == p]
        if len(x) < EVEN_ODD_MIN_POINTS or not (x @ x) > 0:
            return False
        scale = (x @ d) / (x @ x)
        scales.append(scale)
        variances.append(np.sum((d - scale * x) ** 2) / (len(x) - 1) / (x @ x))
    return bool(abs(scales[0] - scales[1]) > EVEN_ODD_Z * np.sqrt(sum(variances)))


def _eclipse_frequency(t, y, w, f, dips, dip_peaks, f_lo, df):
    """Step 4: for a curve with eclipse-like dips, the best box fold among
    the dip fundamentals replaces the harmonic choice f when it is BOX_SWITCH
    times better; it is halved when the even and odd eclipses differ.
    Returns (frequency, whether the period was doubled here)."""
    yc = y - np.average(y, weights=w * w)
    w2 = w * w
    chosen = _box(t, yc, w2, f)
    folds = [
        (_box(t, yc, w2, c), c) for c in _dip_fundamentals(t, dips, dip_peaks, f_lo, df)
    ]
    if folds:
        best, c = max(folds, key=lambda fold: fold[0][0])
        if best[0] > BOX_SWITCH * chosen[0]:
            f, chosen = c, best
    if _depths_alternate(t, y, f, chosen[1], chosen[2]):
        return f / 2, True
    return f, False


def _period(t, y, sig):
    """(period in days, normalised Lomb-Scargle power of its source peak)."""
    w = 1.0 / sig
    yw = (y - np.average(y, weights=w**2)) * w
    peaks, powers, df = _peaks(t, y, sig)
    dips = _dips(y)
    if dips is not None:  # detached eclipses: search the dips alone too
        more = _peaks(t, dips, np.ones_like(y))[0]
        power = LombScargle(t, y, sig).power(more, method="cython")
        peaks, powers = np.r_[peaks, more], np.r_[powers, power]
    span = t[-1] - t[0]
    f_lo, f_hi = 1.0 / min(P_MAX, span), 1.0 / P_MIN
    k_max = int(min(K_MAX, (len(t) - 5) // 4))
    cands = {}
    for f, p in zip(peaks, powers, strict=True):
        subs = [(f - m) / n for m in (0, -1, 1) for n in range(2, 7)]
        options = [f, f - 1, f + 1] + [c for c in subs if span * c >= MANY_CYCLES]
        if span * f < FEW_CYCLES:
            options += [f - 1 / YEAR, f + 1 / YEAR]
        options = [c for c in options if f_lo <= c <= f_hi]
        for c in options:
            cands.setdefault(round(c, 9), p)
    ranked = sorted((*_score(t, yw, w, c, k_max), c) for c in cands)
    best = []  # refined: the best three and every few-cycle candidate
    for _, k, c in ranked[:3] + [r for r in ranked[3:] if span * r[2] < FEW_CYCLES]:
        c2 = _refine(t, yw, w, c, k, 1.5 * df, _trend(t, c))
        best.append((_score(t, yw, w, c2, k_max)[0], c2, cands[round(c, 9)]))
    score, f, power = min(best)
    if not np.isfinite(score):
        f, power = peaks[0], powers[0]
    if dips is not None:
        f_box, doubled = _eclipse_frequency(t, y, w, f, dips, more, 3 / span, df)
        if not np.isclose(f_box, f, rtol=1e-9):
            power = float(LombScargle(t, y, sig).power(f_box, method="cython"))
        if doubled:  # the even and odd eclipses differ: decided
            return 1.0 / f_box, power
        f = f_box
    smoother = 1 - lafler_kinman(t, y, 2 / f) / lafler_kinman(t, y, 1 / f)
    z_needed = LK_DOUBLE_Z_DIPS if dips is not None else LK_DOUBLE_Z
    if span * f >= MANY_CYCLES and smoother * np.sqrt(len(t)) > z_needed:
        f /= 2
    elif _ew_like(t, y, yw, w, f, power):
        f /= 2
    return 1.0 / f, float(power)


def derive(t, mag, mag_err) -> dict:
    """period, amplitude, lksl_statistic and period_power of a light curve.

    t (days), mag, mag_err: the cleaned light curve (finite points, no
    upper limits); non-positive or non-finite errors get the median error.
    Raises FeatureError (one line: what is wrong) for unusable input.
    """
    t, y, sig = _clean(t, mag, mag_err)
    period, power = _period(t, y, sig)
    return {
        "period": period,
        "amplitude": float(np.percentile(y, 98) - np.percentile(y, 2)),
        "lksl_statistic": lafler_kinman(t, y, period),
        "period_power": power,
    }
