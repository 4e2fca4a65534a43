"""Catalogue side of each star: sky position, distance, extinction, Gaia/2MASS/WISE.

One physical chain keeps the catalogue self-consistent: `place_stars`, then
`photometry_columns`, `astrometry_columns` and `gaia_errors` (errors inflated
by variability); each function's docstring says its step.
"""

from __future__ import annotations

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord

from astrom3_jax.data.synthetic import classes

# Population: (scale height kpc, 1-D velocity dispersion km/s, reflex km/s)
POPULATIONS = {
    "young": (0.12, 18.0, 10.0),
    "thin": (0.30, 30.0, 20.0),
    "old": (0.80, 45.0, 35.0),
    "halo": (None, 120.0, 200.0),
}
# Typical apparent V per true class (mean, sd), inside 9.5 < V < 17.
V_APPARENT = {
    "EW": (13.9, 1.3), "EA": (13.2, 1.4), "EB": (13.2, 1.3), "RRAB": (14.6, 1.2),
    "RRC": (14.4, 1.2), "HADS": (13.3, 1.5), "DSCT": (12.3, 1.5), "ROT": (12.7, 1.3),
    "SR": (12.3, 1.5), "M": (13.7, 1.4), "CEP": (12.8, 1.5), "LSP": (12.1, 1.5),
    "RRD": (14.4, 1.2),
}  # fmt: skip


def _g_minus_v(x):
    """Gaia G - V as a cubic in BP-RP (Gaia photometric relations)."""
    x = np.clip(x, -0.5, 4.5)
    return -0.027 + 0.014 * x - 0.216 * x**2 + 0.014 * x**3


def _g_minus_rp(x):
    x = np.clip(x, -0.3, 5.5)
    return 0.02 + 0.55 * x - 0.045 * x**2


def _extinction(d_kpc, sin_b, scale):
    """A_V through a dust layer of scale height 0.12 kpc, 0.9 mag/kpc at the plane."""
    s = np.maximum(np.abs(sin_b), 0.02)
    h = 0.12
    return 0.9 * scale * h / s * (1 - np.exp(-d_kpc * s / h))


def _galactic_l(rng, n):
    """LAMOST footprint favours the anticentre: l skewed to 60-220 deg."""
    mix = rng.random(n) < 0.75
    return np.where(mix, rng.normal(165, 50, n), rng.uniform(0, 360, n)) % 360


def _disc_sin_b(u, sign, hz, d):
    """sin b of a disc star at distance d (density ~ exp(-d |sin b| / hz))."""
    lam = np.maximum(d, 1e-3) / np.maximum(hz, 1e-3)
    return sign * -np.log1p(-u * -np.expm1(-lam)) / lam


def place_stars(true_class, phys, rng):
    """Apparent V, distance, (l, b), A_V, ra/dec for every star.

    Absolute magnitude (PL relation or class range) + apparent V inside the
    ASAS-SN window -> distance (iterated with a dust-layer extinction model)
    -> Galactic latitude from the population's scale height.
    """
    n = len(true_class)
    out = {k: np.zeros(n) for k in ("v_mean", "d_kpc", "l", "b", "a_v", "ra", "dec")}
    todo = np.arange(n)
    for attempt in range(40):
        if len(todo) == 0:
            break
        k = len(todo)
        cls = true_class[todo]
        pop = phys["population"][todo]
        mu_v = np.array([V_APPARENT[c][0] for c in cls])
        sd_v = np.array([V_APPARENT[c][1] for c in cls])
        v = np.clip(rng.normal(mu_v, sd_v), 9.5, 16.9)
        dust_scale = rng.lognormal(0, 0.35, k)
        hz = np.array([POPULATIONS[p][0] or 0.0 for p in pop])
        u_b = rng.uniform(0, 1, k)
        sign = np.where(rng.random(k) < 0.5, -1.0, 1.0)
        halo_sinb = rng.uniform(-1, 1, k)
        d = 10 ** ((v - phys["m_v"][todo] + 5) / 5) / 1000
        for _it in range(6):
            sin_b = np.where(pop == "halo", halo_sinb, _disc_sin_b(u_b, sign, hz, d))
            a_v = _extinction(d, sin_b, dust_scale)
            d = 10 ** ((v - phys["m_v"][todo] - a_v + 5) / 5) / 1000
        sin_b = np.where(pop == "halo", halo_sinb, _disc_sin_b(u_b, sign, hz, d))
        a_v = _extinction(d, sin_b, dust_scale)
        b = np.degrees(np.arcsin(sin_b))
        lon = _galactic_l(rng, k)
        icrs = SkyCoord(l=lon * u.deg, b=b * u.deg, frame="galactic").icrs
        ra, dec = icrs.ra.deg, icrs.dec.deg
        ok = (dec > -10) & (dec < 60) & (d > 0.02) & (d < 25)
        if attempt == 39:  # last resort (1 in ~10^4): clip the distance, keep the sky
            d = np.clip(d, 0.025, 20.0)
            v = phys["m_v"][todo] + 5 * np.log10(d * 100) + a_v
            ok = np.ones(k, bool)
        sel = todo[ok]
        for key, val in (("v_mean", v), ("d_kpc", d), ("l", lon), ("b", b),
                         ("a_v", a_v), ("ra", ra), ("dec", dec)):  # fmt: skip
            out[key][sel] = val[ok]
        todo = todo[~ok]
    if len(todo):
        raise RuntimeError(f"could not place {len(todo)} stars in the footprint")
    return out


def _err_2mass(m):
    return np.sqrt(0.022**2 + (0.1 * 10 ** (0.4 * (m - 14.5))) ** 2)


def _err_wise(m, lim):
    return np.sqrt(0.022**2 + (0.1 * 10 ** (0.4 * (m - lim))) ** 2)


def photometry_columns(true_class, phys, pos, rng):
    """Gaia, 2MASS, WISE magnitudes, colours and errors (the 34 meta columns).

    All magnitudes come from intrinsic colours (Teff) + extinction + dust
    excess (Mira/SR), at the distance `place_stars` chose.
    """
    n = len(true_class)
    teff, a_v, amp = phys["teff"], pos["a_v"], phys["amp_v"]
    giant = phys["giant"]
    carbon = phys["subtype"] == "carbon"
    dust = phys["dust"]
    v = pos["v_mean"]
    bp_rp = classes.bp_rp_of(teff) + 0.43 * a_v + 0.4 * carbon
    g = v + _g_minus_v(bp_rp) - 0.05 * np.clip(amp - 1.5, 0, None)
    rp = g - _g_minus_rp(bp_rp)
    bp = rp + bp_rp
    k0 = v - classes.v_k_of(teff) - (a_v - 0.11 * a_v)
    k0 = np.where(
        np.isfinite(phys["m_k"]),
        phys["m_k"] + 5 * np.log10(pos["d_kpc"] * 100) + 0.11 * a_v,
        k0,
    )
    # Single-epoch 2MASS/WISE sample a random pulsation phase.
    amp_ir = np.where(
        np.isin(true_class, ["M", "SR", "LSP"]), np.minimum(0.25 * amp, 0.9), 0.2 * amp
    )
    phase_term = 0.5 * amp_ir * np.sin(rng.uniform(0, 2 * np.pi, n))
    k = k0 + phase_term
    jk = (
        classes.j_k_of(teff, giant)
        + 0.17 * a_v
        + carbon * rng.uniform(0.4, 1.4, n)
        + 0.25 * dust
    )
    j = k + jk
    h = k + 0.3 * jk + 0.05 * dust
    kw1 = 0.04 + 0.12 * np.clip((4000 - teff) / 1000, 0, 1) + 0.8 * dust
    # AllWISE is another epoch (an independent phase): K - W1 carries amplitude.
    wise_term = 0.5 * amp_ir * np.sin(rng.uniform(0, 2 * np.pi, n))
    w1 = k0 - kw1 + wise_term
    w2 = w1 - (
        0.02 * rng.normal(0, 1, n)
        - 0.04 * np.clip((4200 - teff) / 800, 0, 1)
        + 0.7 * dust
    )
    w3 = w2 - (0.02 + 1.6 * dust)
    w4 = w3 - (0.02 + 0.9 * dust)

    obs = {}
    e_j, e_h, e_k = _err_2mass(j), _err_2mass(h) * 1.1, _err_2mass(k) * 1.2
    sat = j < 9.0
    e_j = np.where(sat, rng.uniform(0.1, 0.3, n), e_j)
    e_h = np.where(h < 8.5, rng.uniform(0.1, 0.3, n), e_h)
    e_k = np.where(k < 8.0, rng.uniform(0.1, 0.3, n), e_k)
    e_w1 = _err_wise(w1, 15.5)
    e_w2 = _err_wise(w2, 14.5)
    w1 = np.where(w1 < 8.1, w1 + rng.uniform(-0.3, 0.3, n), w1)  # saturation bias
    w2 = np.where(w2 < 6.7, w2 + rng.uniform(-0.3, 0.5, n), w2)
    e_w1 = np.where(w1 < 8.1, rng.uniform(0.05, 0.2, n), e_w1)
    e_w2 = np.where(w2 < 6.7, rng.uniform(0.05, 0.2, n), e_w2)
    # Faint W3/W4 photospheres are non-detections: values pile up at the limit.
    w3_noise = w3 + rng.normal(0, 0.1, n) * (1 + np.clip(w3 - 9, 0, None))
    w4_noise = w4 + rng.normal(0, 0.15, n) * (1 + np.clip(w4 - 6, 0, None))
    obs["w3_mag"] = np.where(w3_noise > 11.3, rng.uniform(11.0, 12.6, n), w3_noise)
    obs["w4_mag"] = np.where(w4_noise > 8.0, rng.uniform(8.2, 9.6, n), w4_noise)
    obs["j_mag"] = j + rng.normal(0, 1, n) * e_j
    obs["h_mag"] = h + rng.normal(0, 1, n) * e_h
    obs["k_mag"] = k + rng.normal(0, 1, n) * e_k
    obs["w1_mag"] = w1 + rng.normal(0, 1, n) * e_w1
    obs["w2_mag"] = w2 + rng.normal(0, 1, n) * e_w2
    obs.update(e_j_mag=e_j, e_h_mag=e_h, e_k_mag=e_k, e_w1_mag=e_w1, e_w2_mag=e_w2)

    # Gaia mean magnitudes average many transits (errors: gaia_errors, later).
    obs.update(
        phot_g_mean_mag=g + rng.normal(0, 0.002, n),
        phot_bp_mean_mag=bp + rng.normal(0, 0.01, n),
        phot_rp_mean_mag=rp + rng.normal(0, 0.008, n),
    )  # fmt: skip
    obs["bp_rp"] = obs["phot_bp_mean_mag"] - obs["phot_rp_mean_mag"]
    obs["j_k"] = obs["j_mag"] - obs["k_mag"]
    obs["w1_w2"] = obs["w1_mag"] - obs["w2_mag"]
    obs["w3_w4"] = obs["w3_mag"] - obs["w4_mag"]
    return obs, rp


def gaia_errors(cols, rms, rng):
    """Gaia mean-magnitude errors: photon floor + (intrinsic rms)/sqrt(n transits).

    rms is the noise-free V scatter of the star's own light curve, so detached
    binaries with short eclipses (EA) look quieter than contact binaries of the
    same amplitude: variability leaks into the catalogue, as in Gaia.
    """
    n = len(rms)
    g, bp, rp = (
        cols[k] for k in ("phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag")
    )
    n_g, n_bp = rng.uniform(200, 500, n), rng.uniform(18, 50, n)

    def err(floor, slope, mag, scale, n_obs):
        phot = floor * 10 ** (slope * np.clip(mag - 13, 0, None))
        return np.sqrt(phot**2 + (scale * rms) ** 2 / n_obs) * rng.lognormal(0, 0.1, n)

    return {
        "e_phot_g_mean_mag": err(0.0003, 0.2, g, 0.9, n_g),
        "e_phot_bp_mean_mag": err(0.0015, 0.3, bp, 1.2, n_bp),
        "e_phot_rp_mean_mag": err(0.0012, 0.25, rp, 0.8, n_bp),
    }


def astrometry_columns(true_class, phys, pos, g_mag, rng):
    """Parallax, proper motion, their errors (inflated by RUWE), RUWE."""
    n = len(true_class)
    ruwe = rng.lognormal(0.0, 0.06, n) + 0.0
    binary = np.isin(true_class, ["EW", "EA", "EB", "ROT"]) & (rng.random(n) < 0.15)
    ruwe = np.where(binary, rng.uniform(1.3, 4.0, n), ruwe)
    ruwe = np.where(true_class == "SR", rng.lognormal(np.log(1.15), 0.25, n), ruwe)
    ruwe = np.where(
        np.isin(true_class, ["M", "LSP"]), rng.lognormal(np.log(1.5), 0.4, n), ruwe
    )
    ruwe = np.maximum(ruwe, 0.75)
    sig_plx = 0.014 * 10 ** (0.2 * np.clip(g_mag - 13, 0, None)) * np.maximum(ruwe, 1.0)
    sig_plx *= rng.lognormal(0, 0.15, n)
    plx = 1.0 / pos["d_kpc"] + rng.normal(0, 1, n) * sig_plx
    sig_pmra = 1.1 * sig_plx * rng.lognormal(0, 0.1, n)
    sig_pmdec = 1.0 * sig_plx * rng.lognormal(0, 0.1, n)
    disp = np.array([POPULATIONS[p][1] for p in phys["population"]])
    reflex = np.array([POPULATIONS[p][2] for p in phys["population"]])
    ang = rng.uniform(0, 2 * np.pi, n)
    vt_x = rng.normal(0, 1, n) * disp + reflex * np.cos(ang)
    vt_y = rng.normal(0, 1, n) * disp + reflex * np.sin(ang)
    pm_scale = 1 / (4.74 * pos["d_kpc"])
    pmra = vt_x * pm_scale + rng.normal(0, 1, n) * sig_pmra
    pmdec = vt_y * pm_scale + rng.normal(0, 1, n) * sig_pmdec
    rv = rng.normal(0, 1, n) * disp * 1.2
    return {
        "parallax": plx, "parallax_error": sig_plx,
        "parallax_over_error": plx / sig_plx,
        "pmra": pmra, "pmra_error": sig_pmra, "pmdec": pmdec, "pmdec_error": sig_pmdec,
        "pm": np.hypot(pmra, pmdec), "ruwe": ruwe,
    }, rv  # fmt: skip


def catalogue_period(true_class, phys, rng):
    """Catalogue period with the survey's occasional alias errors."""
    n = len(true_class)
    p = 10 ** phys["log_p"]
    lsp = np.isfinite(phys["lsp_log_p"])
    p = np.where(
        (true_class == "LSP") | (lsp & (rng.random(n) < 0.2)),
        10 ** phys["lsp_log_p"],
        p,
    )
    u = rng.random(n)
    short = p < 0.3
    shift = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    one_day = np.where(short, 1 / np.abs(1 / np.where(short, p, 0.1) - shift), p)
    alias = np.where(short & (u < 0.08), one_day, p)
    alias = np.where(~short & (u < 0.02), p / 2, alias)
    alias = np.where(~short & (u > 0.98), p * 2, alias)
    # Equal minima make half the orbital period look right (EA, and some EW).
    ea_half = (true_class == "EA") & (phys["shape_a"] > 0.85) & (rng.random(n) < 0.5)
    ew_half = (true_class == "EW") & (rng.random(n) < 0.03)
    # Two spot groups on opposite hemispheres: the survey finds P/2.
    rot_half = (true_class == "ROT") & (rng.random(n) < 0.08)
    return np.where(ea_half | ew_half | rot_half, p / 2, alias)
