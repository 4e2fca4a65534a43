"""ASAS-SN-like V-band light curves: cadence, class templates, noise, statistics.

Cadence: 2013-2018 V-band era (HJD 2456300-2458450), one epoch per observed
night at a similar sidereal time (hence 1/day aliases), a 2-5 month seasonal
gap per year, random weather gaps. Noise: sigma_V = sqrt(0.015^2 +
(0.10 * 10^(0.4 (V - 16.5)))^2), extra scatter below V ~ 10.5 (saturation),
rare outliers; flux in mJy with V = 16.4 - 2.5 log10(F / mJy).
"""

from __future__ import annotations

import numpy as np

HJD_START, HJD_END = 2456300.0, 2458450.0
ZERO_POINT = 16.4


def sample_times(rng: np.random.Generator, n_target: int) -> np.ndarray:
    """Observation times for one star (sorted HJD)."""
    baseline = rng.uniform(900, HJD_END - HJD_START)
    start = HJD_START + rng.uniform(0, HJD_END - HJD_START - baseline)
    nights = np.arange(np.floor(start), np.floor(start + baseline))
    conj = rng.uniform(0, 365.25)
    gap = rng.uniform(60, 150)
    season = np.abs(((nights - conj) % 365.25) - 182.6) > gap / 2
    nights = nights[~season]
    p_obs = min(0.95, n_target / max(len(nights), 1))
    nights = nights[rng.random(len(nights)) < p_obs]
    # Two stations (Hawaii/Chile) at a nightly sidereal time drifting through the year.
    site = np.where(rng.random(len(nights)) < 0.5, 0.35, 0.70)
    t = nights + site + rng.normal(0, 0.03, len(nights))
    return np.sort(t)


def _smooth_noise(rng, t, scale, n_min=4):
    """A smooth random curve of unit rms with correlation time `scale`."""
    span = t[-1] - t[0] + 1e-9
    k = max(n_min, int(span / scale) + 2)
    knots = np.linspace(t[0], t[-1], k)
    return np.interp(t, knots, rng.normal(0, 1, k))


def _pulsation_shape(phase, rise, harmonics):
    """Sawtooth-like pulsation (steep rise over `rise` of the cycle), band-limited.

    Returns brightness-ordered values in [0, 1], 0 = maximum light.
    """
    grid = np.linspace(0, 1, 256, endpoint=False)
    bright = np.where(grid < rise, np.sin(0.5 * np.pi * grid / rise) ** 2,
                      1 - np.clip((grid - rise) / (1 - rise), 0, 1) ** 0.8)  # fmt: skip
    spec = np.fft.rfft(bright)
    spec[int(harmonics) + 1 :] = 0
    smooth = np.fft.irfft(spec, 256)
    smooth = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-12)
    return 1.0 - np.interp(phase % 1.0, grid, smooth, period=1.0)


def _eclipse(x, width):
    """Limb-darkened-like eclipse profile, 1 at centre, 0 beyond +-width."""
    return np.clip(1 - (x / width) ** 2, 0, None) ** 1.5


def _wrap(phase):
    return (phase + 0.5) % 1.0 - 0.5


def template(
    cls: str, t: np.ndarray, star: dict, rng: np.random.Generator
) -> np.ndarray:
    """Delta-magnitude (fainter positive) of the class template at times t."""
    p = 10 ** star["log_p"]
    amp = star["amp_v"]
    phi = (t - star["epoch"]) / p
    a, b, c = star["shape_a"], star["shape_b"], star["shape_c"]
    if cls == "EW":
        base = (0.5 * (1 - np.cos(4 * np.pi * phi))) ** b
        dm = (
            base
            + a * base * 0.5 * (1 + np.cos(2 * np.pi * phi))
            + c * np.sin(2 * np.pi * phi)
        )
    elif cls == "EB":
        w = _wrap(phi)
        ecl = _eclipse(w, b) + a * _eclipse(_wrap(phi - 0.5), b)
        dm = c * 0.5 * (1 - np.cos(4 * np.pi * phi)) + (1 - c) * ecl
    elif cls == "EA":
        ecl = _eclipse(_wrap(phi), b) + a * _eclipse(_wrap(phi - 0.5 - c), b * 1.1)
        dm = ecl + 0.02 * 0.5 * (1 - np.cos(4 * np.pi * phi))
    elif cls in ("RRAB", "HADS", "CEP", "RRC", "RRD"):
        harm = {"RRAB": 8, "HADS": 4, "CEP": 6, "RRC": 3, "RRD": 2}[cls]
        dm = _pulsation_shape(phi, a, harm)
        if cls == "RRAB":
            bump = 0.06 * np.exp(-0.5 * (((phi % 1) - 0.8) / 0.04) ** 2)
            dm = dm - bump
            if b > 0:  # Blazhko modulation of amplitude
                dm = dm * (1 + b * np.sin(2 * np.pi * t / c))
        if cls == "HADS" and b > 0:  # double-mode beating, P1/P0 = 0.77
            dm = dm + b * 0.5 * np.sin(2 * np.pi * phi / 0.77 + 1.0)
        if cls == "RRD":  # fundamental mode at P0 = P1 / 0.745
            dm = dm + b * _pulsation_shape(phi * 0.745 + 0.3, 0.2, 5)
    elif cls == "DSCT":
        dm = np.sin(2 * np.pi * phi)
        for ratio, rel in (
            (rng.uniform(0.6, 0.9), a),
            (rng.uniform(1.1, 1.4), a * 0.6),
        ):
            dm = dm + rel * np.sin(2 * np.pi * phi * ratio + rng.uniform(0, 6.3))
    elif cls == "M":
        cyc = np.floor(phi)
        dm = _pulsation_shape(phi, a, 3)
        offs = rng.normal(0, b, int(cyc.max() - cyc.min()) + 2)
        dm = dm + offs[(cyc - cyc.min()).astype(int)] / max(amp, 1e-3)
    elif cls in ("SR", "LSP"):
        mod = 1 + a * _smooth_noise(rng, t, p * 2)
        drift = 0.4 * a * _smooth_noise(rng, t, p * 3)
        dm = mod * np.sin(2 * np.pi * (phi + drift)) + 0.5 * a * np.sin(
            2 * np.pi * phi / b + rng.uniform(0, 6.3)
        )
        if np.isfinite(star["lsp_log_p"]):
            lsp_w = 1.6 if cls == "LSP" else 0.6
            dm = dm + lsp_w * np.sin(
                2 * np.pi * (t - star["epoch"]) / 10 ** star["lsp_log_p"]
            )
    elif cls == "ROT":
        ampl = np.clip(1 + b * _smooth_noise(rng, t, c), 0.2, None)
        drift = 0.15 * _smooth_noise(rng, t, c)
        dm = ampl * (
            np.sin(2 * np.pi * (phi + drift)) + a * np.sin(4 * np.pi * (phi + drift))
        )
        dm = dm + 0.4 * b * _smooth_noise(rng, t, 2 * c)
    else:
        raise ValueError(cls)
    dm = dm - np.median(dm)
    span = np.percentile(dm, 99) - np.percentile(dm, 1) if len(dm) > 20 else np.ptp(dm)
    return amp * dm / max(span, 1e-6)


def noise_sigma(v: np.ndarray) -> np.ndarray:
    """ASAS-SN V error model (mag)."""
    return np.sqrt(0.015**2 + (0.10 * 10 ** (0.4 * (v - 16.5))) ** 2)


def simulate(cls: str, star: dict, rng: np.random.Generator):
    """One light curve: (hjd, mag, mag_err, flux, flux_err) and the noise-free rms."""
    n_target = int(np.clip(rng.lognormal(np.log(260), 0.45), 90, 900))
    t = sample_times(rng, n_target)
    v_true = star["v_mean"] + template(cls, t, star, rng)
    sig = noise_sigma(v_true) * rng.lognormal(0, 0.15, len(t))
    sig = sig + np.where(v_true < 10.5, 0.04 * (10.5 - v_true) + 0.02, 0.0)
    # Blending: a neighbour inside the 16" aperture adds constant flux and
    # dilutes the amplitude (more likely in crowded low-latitude fields).
    blend = star["blend"] * 10 ** (-0.4 * (star["v_mean"] - ZERO_POINT))
    flux_true = 10 ** (-0.4 * (v_true - ZERO_POINT)) + blend
    v_true = ZERO_POINT - 2.5 * np.log10(flux_true)
    flux_err = 0.921 * sig * flux_true + 0.02  # detection floor (mJy)
    flux = flux_true + rng.normal(0, 1, len(t)) * flux_err
    # Camera-to-camera zero points (the star falls on 1-3 cameras): a
    # systematic scatter the error bars do not include.
    cams = rng.normal(0, 0.025, 3)[rng.integers(0, rng.integers(1, 4), len(t))]
    flux = flux * 10 ** (-0.4 * cams)
    outlier = rng.random(len(t)) < 0.005
    flux = np.where(outlier, flux * 10 ** (-0.4 * rng.normal(0.3, 0.4, len(t))), flux)
    # Saturation: brighter than V ~ 9.8 the response flattens (clipped maxima,
    # extra scatter) but does not become constant.
    sat = 10 ** (-0.4 * (9.8 - ZERO_POINT))
    soft = sat * np.clip(flux / sat, 1, None) ** 0.3
    flux = np.where(flux > sat, soft * rng.lognormal(0, 0.02, len(t)), flux)
    good = flux > 0
    mag = np.where(good, ZERO_POINT - 2.5 * np.log10(np.where(good, flux, 1.0)), 99.99)
    mag_err = np.where(good, 1.0857 * flux_err / np.where(good, flux, 1.0), 99.99)
    mag_err = np.minimum(mag_err, 99.99)
    return (t, mag, mag_err, flux, flux_err), float(np.std(v_true))


def format_dat(name: str, t, mag, mag_err, flux, flux_err) -> bytes:
    """The vardb text file: two header lines, five whitespace-separated columns."""
    head = f"# {name} (synthetic ASAS-SN V light curve)\n"
    head += "# HJD MAG MAG_ERR FLUX FLUX_ERR\n"
    rows = np.column_stack([t, mag, mag_err, flux, flux_err])
    body = "\n".join(
        f"{r[0]:.5f} {r[1]:.3f} {r[2]:.3f} {r[3]:.5f} {r[4]:.5f}" for r in rows.tolist()
    )
    return (head + body + "\n").encode("ascii")


def lafler_kinman(t, y, period) -> float:
    """Normalised Lafler-Kinman statistic T = Theta (N-1)/(2N) at `period`."""
    order = np.argsort((t / period) % 1.0, kind="stable")
    ys = y[order]
    num = np.sum((np.roll(ys, -1) - ys) ** 2)
    den = np.sum((ys - ys.mean()) ** 2) + 1e-12
    n = len(ys)
    return float(num / den * (n - 1) / (2 * n))


def summarise(t, mag, flux, period) -> dict:
    """Catalogue photo quantities measured from the light curve itself."""
    good = mag < 50
    m = mag[good]
    return {
        "mean_vmag": float(np.mean(m)),
        "amplitude": float(np.percentile(m, 98) - np.percentile(m, 2)),
        "lksl_statistic": lafler_kinman(t[good], m, period),
    }
