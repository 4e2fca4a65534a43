"""How ASAS-SN observes one star: sites, cameras, the V and g eras, limits, noise.

Figures marked [real] were measured on public ASAS-SN downloads (a Sky
Patrol v1 file with 1,249 V and 2,336 g rows and two variable-star-database
exports); the rest are the survey's published set-up. docs/synthetic/README.md
lists them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# The V era: first V data in early 2012 [real: HJD 2455955.8]; each field's
# unit moved to g between September 2017 and November 2018 [real: last V
# point 2458451, first g point 2458001.9]. g runs on to 2021 [real: 2459332].
V_START = 2455950.0
SWITCH_RANGE = (2458000.0, 2458455.0)
G_END = 2459340.0

# Observatory latitude (deg), V cameras, g cameras, clear-night fraction.
SITES = {
    "hawaii": (20.7, ("ba", "bb", "bc", "bd"), ("bi", "bj", "bk", "bl"), 0.72),
    "chile": (-30.2, ("be", "bf", "bg", "bh"), ("bm", "bn", "bq", "bE"), 0.80),
}
# A field is visible while the star culminates above 30 deg altitude.
MAX_ZENITH = 60.0

# Per-epoch 5-sigma limiting magnitude: median 16.39, 5-95 % 15.46-16.92 in V
# [real]; g reaches ~0.3 mag deeper [real: median 16.72]. Bright moon and
# poor nights make the faint tail.
LIMIT_V = 17.0
LIMIT_G_OFFSET = 0.33
LUNAR_MONTH = 29.53
FULL_MOON_HJD = 2455960.1
# Errors: a 0.02 mag floor (flat field, calibration) and a sky term that is
# 1.0857/5 mag at the limit. It reproduces the real files' median errors:
# 0.020 at V = 11.4, 0.023 at V = 13.2, 0.06 at V = 14.9 [real].
ERROR_FLOOR = 0.02
# Camera zero points scatter by a few hundredths of a magnitude [real: 0.03-0.1
# between cameras in Sky Patrol]; the variable-star database calibrates each
# camera, leaving per-camera medians equal to 0.001 mag [real, two files].
CAMERA_ZP_SD = 0.035
DATABASE_ZP_SD = 0.003
ZERO_POINT = 16.4  # V = 16.4 - 2.5 log10(F / mJy) [real: 16.46 from Sky Patrol]
SATURATION_V = 9.8


@dataclasses.dataclass(frozen=True)
class History:
    """One star's epochs in time order: when, which band and camera, how deep."""

    t: np.ndarray
    band: np.ndarray  # "V" or "g"
    camera: np.ndarray  # two-letter camera names
    limit: np.ndarray  # 5-sigma limiting magnitude of the epoch's image
    zero_point: np.ndarray  # the camera's offset (mag), added to the star


def _season_gap(dec: float, lat: float) -> float:
    """Days per year the field is lost to the Sun: longer for low culminations."""
    return float(np.clip(50.0 + 2.2 * abs(dec - lat), 50.0, 230.0))


def _site_epochs(rng, site, dec, ra, start, stop, cadence):
    """Epochs of one site's fields containing the star between start and stop."""
    lat, _, _, clear = SITES[site]
    if abs(dec - lat) > MAX_ZENITH or stop <= start:
        return np.zeros(0), np.zeros(0, int)
    nights = np.arange(np.floor(start), np.floor(stop))
    # The field is opposite the Sun (best placed) near HJD where the Sun's RA is
    # ra + 180: the Sun's RA grows ~0.9856 deg per day from 0 at the March
    # equinox (HJD 2455642 + k * 365.25).
    opposition = 2455642.0 + ((ra + 180.0) % 360.0) / 0.9856
    from_opposition = (nights - opposition + 182.6) % 365.25 - 182.6
    gap = _season_gap(dec, lat) * rng.uniform(0.85, 1.15)
    visible = np.abs(from_opposition) < (365.25 - gap) / 2
    n_fields = 1 + int(rng.random() < 0.5)  # overlapping fields: two cameras
    first = visible & (rng.random(len(nights)) < clear * cadence)
    times, fields = [], []
    for field in range(n_fields):
        # An overlapping field is mostly visited on the same clear nights.
        keep = first if field == 0 else first & (rng.random(len(nights)) < 0.8)
        # Observed near culmination, which moves through the night over the
        # season (hence the 1/day aliases); the two fields minutes to hours apart.
        night_time = 0.5 - from_opposition[keep] / 365.25 * 0.6
        offset = 0.0 if field == 0 else rng.uniform(0.01, 0.25)
        jitter = rng.normal(0.0, 0.02, keep.sum())
        times.append(nights[keep] + night_time + offset + jitter)
        fields.append(np.full(keep.sum(), field))
    return np.concatenate(times), np.concatenate(fields)


def observe(rng: np.random.Generator, ra: float, dec: float) -> History:
    """Every V and g epoch of a star at (ra, dec), with cameras and limits."""
    switch = rng.uniform(*SWITCH_RANGE)
    # Coverage grew over the first years [real: two database stars start in
    # late 2014]; a field got one epoch every ~3-8 clear nights in V, and
    # about twice as often once the g era's five units ran.
    start = min(V_START + rng.exponential(400.0), switch - 900.0)
    cadence_v = rng.uniform(0.09, 0.24)
    cadence_g = rng.uniform(0.25, 0.45)
    parts = []
    for site, (_, v_cams, g_cams, _) in SITES.items():
        for band, lo, hi, cadence, cams in (
            ("V", start, switch, cadence_v, v_cams),
            ("g", switch, G_END, cadence_g, g_cams),
        ):
            t, field = _site_epochs(rng, site, dec, ra, lo, hi, cadence)
            chosen = rng.choice(len(cams), size=2, replace=False)
            camera = np.asarray(cams)[chosen][field]
            zp = rng.normal(0.0, CAMERA_ZP_SD, 2)[field]
            parts.append((t, np.full(len(t), band), camera, zp))
    t = np.concatenate([p[0] for p in parts])
    order = np.argsort(t, kind="stable")
    band = np.concatenate([p[1] for p in parts])[order]
    t = t[order]
    return History(
        t=t,
        band=band,
        camera=np.concatenate([p[2] for p in parts])[order],
        limit=limits(rng, t, band),
        zero_point=np.concatenate([p[3] for p in parts])[order],
    )


def limits(rng: np.random.Generator, t: np.ndarray, band: np.ndarray) -> np.ndarray:
    """5-sigma limiting magnitude per epoch: moonlight and bad nights cut it."""
    moon = 0.5 * (1 + np.cos(2 * np.pi * (t - FULL_MOON_HJD) / LUNAR_MONTH))
    depth = LIMIT_V - 0.5 * moon - rng.exponential(0.4, len(t))
    depth = depth + rng.normal(0.0, 0.1, len(t))
    return np.where(band == "g", depth + LIMIT_G_OFFSET, depth)


def sigma(mag: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Magnitude error of a detection of `mag` on an image that reaches `limit`."""
    sky = (1.0857 / 5.0) * 10 ** (0.4 * (mag - limit))
    return np.sqrt(ERROR_FLOOR**2 + sky**2)
