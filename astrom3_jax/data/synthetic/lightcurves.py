"""ASAS-SN light curves: class templates, the measurement, catalogue statistics.

`observe_star` puts a class template through `instrument` (cameras, the V
and g eras, limits, noise), then saturation, outliers and blends; the
release keeps the database's V light curve. `sample_times` is a plain
nightly cadence for tests and benchmarks. Flux is in mJy,
V = 16.4 - 2.5 log10(F / mJy).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from astrom3_jax.data.synthetic import instrument

HJD_START, HJD_END = 2456300.0, 2458450.0
ZERO_POINT = instrument.ZERO_POINT


def sample_times(rng: np.random.Generator, n_target: int) -> np.ndarray:
    """About n_target nightly epochs with seasonal gaps (sorted HJD)."""
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
        harm = {"RRAB": 8, "HADS": 4, "CEP": 6, "RRC": 4, "RRD": 2}[cls]
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


# Pulsators vary more in g than in V; binaries and spots about equally.
G_AMPLITUDE = {"RRAB": 1.25, "RRC": 1.25, "RRD": 1.25, "HADS": 1.25, "DSCT": 1.25,
               "CEP": 1.25, "M": 1.2}  # fmt: skip
BAD_IMAGE_RATE = 0.03  # Sky Patrol rows with every value 99.990 [real: 112 of 3585]
OUTLIER_RATE = 0.005
SENTINEL = 99.99


@dataclasses.dataclass(frozen=True)
class Observed:
    """Every epoch of one star as ASAS-SN measured it (both bands, all cameras).

    `flux` is on each camera's own zero point (Sky Patrol's view);
    `database_flux` after the variable-star database's per-camera
    calibration. `detected` is False for non-detections (fainter than the
    epoch's limit; their forced flux is kept), `bad` marks failed images.
    """

    history: instrument.History
    flux: np.ndarray
    database_flux: np.ndarray
    flux_err: np.ndarray
    detected: np.ndarray
    bad: np.ndarray
    rms_v: float

    def magnitudes(self, flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mag, mag_err) of detections; SENTINEL for non-detections."""
        good = self.detected & (flux > 0)
        safe = np.where(good, flux, 1.0)
        mag = np.where(good, ZERO_POINT - 2.5 * np.log10(safe), SENTINEL)
        err = np.minimum(1.0857 * self.flux_err / safe, SENTINEL)
        err = np.where(good, err, SENTINEL)
        return mag, err

    def release_curve(self):
        """The V-band database light curve: (hjd, mag, mag_err, flux, flux_err)."""
        keep = (self.history.band == "V") & ~self.bad
        mag, err = self.magnitudes(self.database_flux)
        return (
            self.history.t[keep],
            mag[keep],
            err[keep],
            self.database_flux[keep],
            self.flux_err[keep],
        )


def observe_star(cls: str, star: dict, rng: np.random.Generator) -> Observed:
    """A star's whole ASAS-SN record: V era and g era, cameras, limits, noise."""
    history = instrument.observe(rng, star["ra"], star["dec"])
    t, n = history.t, len(history.t)
    g = history.band == "g"
    dm = template(cls, t, star, rng)
    dm = np.where(g, dm * G_AMPLITUDE.get(cls, 1.05), dm)
    colour = np.where(g, star["g_minus_v"], 0.0)
    # Blending: a neighbour inside the 16" aperture adds constant flux and
    # dilutes the amplitude (more likely in crowded low-latitude fields).
    blend = star["blend"] * 10 ** (-0.4 * (star["v_mean"] + colour - ZERO_POINT))
    flux_true = 10 ** (-0.4 * (star["v_mean"] + dm + colour - ZERO_POINT)) + blend
    m_true = ZERO_POINT - 2.5 * np.log10(flux_true)
    rms_v = float(np.std(m_true[~g])) if (~g).any() else 0.0
    sig = instrument.sigma(m_true, history.limit) * rng.lognormal(0, 0.15, n)
    flux_err = 0.921 * sig * flux_true
    noise = rng.normal(0, 1, n) * flux_err
    database_zp = history.zero_point * (
        instrument.DATABASE_ZP_SD / instrument.CAMERA_ZP_SD
    )
    outlier = rng.random(n) < OUTLIER_RATE
    jump = np.where(outlier, 10 ** (-0.4 * rng.normal(0.3, 0.4, n)), 1.0)
    # Saturation: brighter than V ~ 9.8 the response flattens (clipped maxima,
    # extra scatter) but does not become constant.
    sat = 10 ** (-0.4 * (instrument.SATURATION_V - ZERO_POINT))
    scatter = rng.lognormal(0, 0.02, n)

    def measured(zp):
        flux = (flux_true + noise) * 10 ** (-0.4 * zp) * jump
        soft = sat * np.clip(flux / sat, 1, None) ** 0.3 * scatter
        return np.where(flux > sat, soft, flux)

    flux = measured(history.zero_point)
    database_flux = measured(database_zp)
    limit_flux = 10 ** (-0.4 * (history.limit - ZERO_POINT))
    return Observed(
        history=history,
        flux=flux,
        database_flux=database_flux,
        flux_err=flux_err,
        detected=flux >= limit_flux,
        bad=rng.random(n) < BAD_IMAGE_RATE,
        rms_v=rms_v,
    )


def simulate(cls: str, star: dict, rng: np.random.Generator):
    """The release's V light curve (hjd, mag, mag_err, flux, flux_err) and the
    noise-free V rms."""
    observed = observe_star(cls, star, rng)
    return observed.release_curve(), observed.rms_v


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
    """Catalogue photo quantities measured from the light curve itself: from
    the detections, or from every positive flux when fewer than 20 were
    detected (a star near the limit)."""
    good = mag < 50
    m = mag[good]
    if good.sum() < 20:
        good = flux > 0
        m = ZERO_POINT - 2.5 * np.log10(flux[good])
    return {
        "mean_vmag": float(np.mean(m)),
        "amplitude": float(np.percentile(m, 98) - np.percentile(m, 2)),
        "lksl_statistic": lafler_kinman(t[good], m, period),
    }
