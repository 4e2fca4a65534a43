"""Per-class physics of the synthetic survey: counts, periods, amplitudes, stars.

Every number is a textbook value for the class, named in a comment and
summarised in docs/synthetic/README.md. Counts follow the catalogue labels,
the physics (`sample_physics`) the true class.
"""

from __future__ import annotations

import numpy as np

from astrom3_jax.data.schema import CLASSES

__all__ = ["CLASSES", "UNSEEN_CLASSES", "class_counts", "sample_physics"]
UNSEEN_CLASSES = ("CEP", "LSP", "RRD")

# Real AstroM3 totals (21,440) and the published seed-42 split sizes.
FULL_COUNTS = {
    "EW": 6168, "SR": 4590, "EA": 2916, "RRAB": 2351, "EB": 1976,
    "ROT": 1839, "RRC": 796, "HADS": 281, "M": 268, "DSCT": 255,
}  # fmt: skip
SPLIT_COUNTS_42 = {
    "EW": (4890, 597, 681), "SR": (3647, 479, 464), "EA": (2343, 272, 301),
    "RRAB": (1886, 231, 234), "EB": (1571, 207, 198), "ROT": (1454, 189, 196),
    "RRC": (624, 93, 79), "HADS": (226, 29, 26), "M": (216, 30, 22),
    "DSCT": (206, 25, 24),
}  # fmt: skip

# Unseen (out-of-catalogue) classes and the known label the catalogue gave them.
UNSEEN_LABEL = {"CEP": "RRAB", "LSP": "SR", "RRD": "RRC"}

# Plausible catalogue confusions used for planted mislabels (true -> label).
CONFUSIONS = {
    "EW": ("EB", "EA", "ROT"), "EB": ("EW", "EA"), "EA": ("EB", "EW"),
    "RRAB": ("RRC", "EW"), "RRC": ("RRAB", "EW"), "HADS": ("DSCT", "RRC"),
    "DSCT": ("HADS",), "M": ("SR",), "SR": ("M", "ROT"), "ROT": ("SR", "EW"),
}  # fmt: skip

# --- colour tables (dwarfs / giants): intrinsic colours against Teff ------------
_TEFF = np.array([2400, 2800, 3100, 3400, 3850, 4400, 4750, 5250, 5900, 6500,
                  7200, 8100, 9700, 12000], float)  # fmt: skip
_BPRP = np.array([5.5, 4.5, 3.9, 2.9, 1.85, 1.40, 1.15, 0.95, 0.75, 0.58,
                  0.40, 0.20, 0.00, -0.15])  # fmt: skip
_JK_DWARF = np.array([1.0, 0.95, 0.9, 0.85, 0.82, 0.70, 0.58, 0.47, 0.35, 0.27,
                      0.16, 0.07, 0.0, -0.05])  # fmt: skip
_JK_GIANT = np.array([1.6, 1.4, 1.3, 1.25, 1.0, 0.80, 0.65, 0.55, 0.40, 0.29,
                      0.17, 0.07, 0.0, -0.05])  # fmt: skip
_VK = np.array([10.0, 8.5, 6.8, 5.2, 3.7, 2.9, 2.5, 2.0, 1.45, 1.1, 0.75, 0.4,
                0.0, -0.3])  # fmt: skip
_MV_MS = np.array([15.0, 13.5, 12.5, 11.5, 8.9, 7.3, 6.5, 5.8, 4.2, 3.4, 2.6,
                   1.9, 1.1, 0.0])  # fmt: skip


def bp_rp_of(teff):
    """Intrinsic Gaia BP-RP from Teff (dwarf colour scale)."""
    return np.interp(teff, _TEFF, _BPRP)


def g_minus_v_of(teff):
    """Intrinsic Sloan g - V from Teff: g - r from BP-RP, then g - V = 0.59 (g - r)
    + 0.01 (Jester et al. 2005), g - r capped at 1.6 for the coolest giants."""
    g_r = np.clip(0.9 * bp_rp_of(teff) - 0.3, -0.4, 1.6)
    return 0.59 * g_r + 0.01


def j_k_of(teff, giant):
    """Intrinsic 2MASS J-K from Teff, giant or dwarf scale."""
    return np.where(
        giant, np.interp(teff, _TEFF, _JK_GIANT), np.interp(teff, _TEFF, _JK_DWARF)
    )


def v_k_of(teff):
    """Intrinsic V-K from Teff."""
    return np.interp(teff, _TEFF, _VK)


def mv_main_sequence(teff):
    """Main-sequence absolute V magnitude from Teff."""
    return np.interp(teff, _TEFF, _MV_MS)


def class_counts(preset: str, n_objects: int | None = None) -> dict[str, int]:
    """Catalogue-label counts: the real ones ('full') or scaled with floors.

    Classes are drawn as catalogue labels first, so the counts match the real
    release exactly; the physics then follows each object's true class.
    """
    if preset == "full" and n_objects is None:
        return dict(FULL_COUNTS)
    total = sum(FULL_COUNTS.values())
    n = n_objects if n_objects is not None else 1800
    floor = max(4, min(80, n // 25))
    return {c: max(floor, round(n * k / total)) for c, k in FULL_COUNTS.items()}


def _clipped_normal(rng, mean, sd, lo, hi, n):
    return np.clip(rng.normal(mean, sd, n), lo, hi)


def _pulsator_params(rng, n, rise_lo, rise_hi, harmonics):
    return {
        "rise": rng.uniform(rise_lo, rise_hi, n),
        "harmonics": np.full(n, harmonics, float),
    }


def sample_physics(true_class: np.ndarray, rng: np.random.Generator) -> dict:
    """Draws the physical star behind each object from its true class.

    The true class differs from the catalogue label for planted mislabels and
    unseen-class objects. The values are textbook ones for the class (period
    and amplitude ranges, spectral types, luminosity classes,
    period-luminosity relations).

    Returns arrays: log_p (true period), amp_v (peak-to-peak V), teff, logg,
    feh, m_v, m_k (absolute), giant flag, population, subtype, dust (IR
    excess scale), shape parameters for the light-curve templates.
    """
    n = len(true_class)
    out = {
        "log_p": np.zeros(n), "amp_v": np.zeros(n), "teff": np.zeros(n),
        "logg": np.zeros(n), "feh": np.zeros(n), "m_v": np.zeros(n),
        "m_k": np.full(n, np.nan), "giant": np.zeros(n, bool),
        "population": np.full(n, "thin", dtype=object),
        "subtype": np.full(n, "", dtype=object), "dust": np.zeros(n),
        "vsini": np.zeros(n), "shape_a": np.zeros(n), "shape_b": np.zeros(n),
        "shape_c": np.zeros(n), "shape_d": np.zeros(n),
        "lsp_log_p": np.full(n, np.nan),
    }  # fmt: skip
    for cls in np.unique(true_class):
        idx = np.flatnonzero(true_class == cls)
        _SAMPLERS[cls](rng, len(idx), out, idx)
    return out


def _set(out, idx, **kw):
    for k, v in kw.items():
        out[k][idx] = v


def _ew(rng, n, out, idx):
    # EW: logP ~ N(-0.45, 0.12), floor 0.22 d; M_V = 4.0 - 9(logP + 0.45)
    # (Mateo & Rucinski slope); shorter P -> cooler (period-colour relation).
    log_p = np.clip(rng.normal(-0.45, 0.12, n), np.log10(0.22), 0.0)
    teff = np.clip(6100 + 3500 * (log_p + 0.45) + rng.normal(0, 350, n), 4400, 7300)
    _set(out, idx, log_p=log_p, teff=teff, logg=rng.normal(4.2, 0.15, n),
         feh=rng.normal(-0.1, 0.25, n),
         m_v=4.0 - 9.0 * (log_p + 0.45) + rng.normal(0, 0.25, n),
         amp_v=np.clip(rng.lognormal(np.log(0.35), 0.5, n), 0.06, 0.8),
         vsini=rng.uniform(80, 200, n), population="old",  # W UMa: old disc
         shape_a=rng.uniform(0.0, 0.1, n),    # depth difference of the minima
         shape_b=rng.uniform(1.25, 1.9, n),   # minimum sharpness (> 1: narrow minima)
         shape_c=rng.normal(0, 0.02, n))  # fmt: skip


def _eb(rng, n, out, idx):
    # EB: A-F, logP ~ N(-0.15, 0.25); unequal minima (secondary 0.2-0.7).
    log_p = np.clip(rng.normal(-0.15, 0.25, n), -0.55, 0.6)
    teff = np.clip(rng.normal(7800, 900, n), 5800, 10500)
    _set(out, idx, log_p=log_p, teff=teff, logg=rng.normal(4.0, 0.2, n),
         feh=rng.normal(-0.05, 0.2, n),
         m_v=mv_main_sequence(teff) - 0.75 + rng.normal(0, 0.45, n),
         amp_v=np.clip(rng.lognormal(np.log(0.45), 0.45, n), 0.1, 1.8),
         vsini=rng.uniform(40, 150, n), population="young",  # A-F: young disc
         shape_a=rng.uniform(0.3, 0.9, n),  # secondary / primary depth
         shape_b=rng.uniform(0.07, 0.16, n),  # eclipse half-width (phase)
         shape_c=rng.uniform(0.4, 0.8, n))  # ellipsoidal fraction  # fmt: skip


def _ea(rng, n, out, idx):
    # EA: broad logP ~ N(0.35, 0.45); flat out of eclipse, narrow eclipses.
    log_p = np.clip(rng.normal(0.35, 0.45, n), -0.6, 2.0)
    hot = rng.random(n) < 0.4  # A-type primaries vs F-G systems
    teff = np.where(hot, rng.normal(8800, 900, n), rng.normal(6000, 700, n))
    teff = np.clip(teff, 4500, 10500)
    giant = rng.random(n) < 0.15
    m_v = np.where(giant, rng.normal(1.0, 0.8, n), mv_main_sequence(teff) - 0.7)
    ecc = rng.random(n) < 0.3
    _set(out, idx, log_p=log_p, teff=teff, giant=giant,
         logg=np.where(giant, rng.normal(3.0, 0.4, n), rng.normal(4.1, 0.2, n)),
         feh=rng.normal(-0.1, 0.25, n), m_v=m_v + rng.normal(0, 0.4, n),
         amp_v=np.clip(rng.lognormal(np.log(0.55), 0.55, n), 0.1, 3.0),
         vsini=rng.uniform(5, 60, n),
         shape_a=np.clip(rng.beta(1.2, 2.5, n), 0, 1),   # secondary depth ratio
         shape_b=rng.uniform(0.015, 0.09, n),            # eclipse half-width
         shape_c=np.where(ecc, rng.normal(0, 0.05, n), 0.0))  # fmt: skip


def _rrab(rng, n, out, idx):
    # RRab: logP ~ N(-0.25, 0.07); Bailey relation for A_V; M_V = 0.23[Fe/H]+0.93.
    log_p = np.clip(rng.normal(-0.25, 0.07, n), -0.5, 0.0)
    amp = -2.627 - 22.046 * log_p - 30.876 * log_p**2 + rng.normal(0, 0.15, n)
    feh = np.clip(rng.normal(-1.5, 0.4, n), -2.5, 0.0)
    _set(out, idx, log_p=log_p, amp_v=np.clip(amp, 0.35, 1.6),
         teff=rng.normal(6500, 250, n), logg=rng.normal(2.75, 0.2, n), feh=feh,
         m_v=0.23 * feh + 0.93 + rng.normal(0, 0.12, n), giant=True,
         population="halo", vsini=rng.uniform(5, 15, n),
         shape_a=rng.uniform(0.10, 0.22, n),   # rise fraction
         shape_b=(rng.random(n) < 0.45) * rng.uniform(0.05, 0.2, n),  # Blazhko
         shape_c=rng.uniform(30, 200, n))  # Blazhko period  # fmt: skip


def _rrc(rng, n, out, idx):
    # RRc: logP ~ N(-0.50, 0.06); near-sinusoidal; hotter than RRab.
    log_p = np.clip(rng.normal(-0.50, 0.06, n), -0.7, -0.3)
    feh = np.clip(rng.normal(-1.5, 0.4, n), -2.5, 0.0)
    _set(out, idx, log_p=log_p, amp_v=np.clip(rng.normal(0.42, 0.09, n), 0.15, 0.8),
         teff=rng.normal(7400, 200, n), logg=rng.normal(2.9, 0.2, n), feh=feh,
         m_v=0.23 * feh + 0.88 + rng.normal(0, 0.12, n), giant=True,
         population="halo", vsini=rng.uniform(5, 15, n),
         shape_a=rng.uniform(0.28, 0.42, n))  # rise fraction  # fmt: skip


def _hads(rng, n, out, idx):
    # HADS: logP ~ N(-1.0, 0.18); M_V = -3.31 logP - 1.68; A_V > 0.15 (mostly > 0.3).
    log_p = np.clip(rng.normal(-1.0, 0.18, n), -1.4, -0.6)
    amp = np.clip(rng.lognormal(np.log(0.28), 0.45, n), 0.12, 0.9)
    _set(out, idx, log_p=log_p, amp_v=amp,
         teff=rng.normal(7500, 450, n), logg=rng.normal(3.8, 0.2, n),
         feh=rng.normal(-0.1, 0.3, n),
         m_v=-3.31 * log_p - 1.68 + rng.normal(0, 0.25, n), population="young",
         vsini=rng.uniform(10, 60, n), shape_a=rng.uniform(0.2, 0.38, n),
         shape_b=(rng.random(n) < 0.2) * rng.uniform(0.3, 0.6, n))  # fmt: skip


def _dsct(rng, n, out, idx):
    # DSCT: logP ~ N(-1.05, 0.2); low amplitude, multi-periodic;
    # M_V = -2.89 logP - 1.31 (older calibration), larger scatter.
    log_p = np.clip(rng.normal(-1.05, 0.2, n), -1.6, -0.6)
    amp = np.clip(rng.lognormal(np.log(0.13), 0.5, n), 0.03, 0.4)
    _set(out, idx, log_p=log_p, amp_v=amp,
         teff=rng.normal(7600, 550, n), logg=rng.normal(3.8, 0.25, n),
         feh=rng.normal(-0.05, 0.3, n),
         m_v=-2.89 * log_p - 1.31 + rng.normal(0, 0.45, n), population="young",
         vsini=rng.uniform(30, 200, n), shape_a=rng.uniform(0.3, 1.0, n))  # fmt: skip


def _rot(rng, n, out, idx):
    # ROT: dwarfs (MS, fast) vs RS CVn-like giants (slow); spot modulation.
    giant = rng.random(n) < 0.35
    log_p = np.where(giant, rng.normal(1.3, 0.3, n), rng.normal(0.45, 0.3, n))
    teff = np.where(giant, rng.normal(4700, 300, n), rng.normal(4600, 600, n))
    teff = np.clip(teff, 3300, 6200)
    m_v = np.where(
        giant, rng.normal(1.8, 0.8, n), mv_main_sequence(teff) + rng.normal(0, 0.3, n)
    )
    _set(out, idx, log_p=np.clip(log_p, -0.5, 2.1), teff=teff, giant=giant,
         logg=np.where(giant, rng.normal(3.0, 0.3, n), rng.normal(4.5, 0.15, n)),
         feh=rng.normal(-0.05, 0.2, n), m_v=m_v,
         amp_v=np.clip(rng.lognormal(np.log(0.13), 0.5, n), 0.04, 0.6),
         subtype=np.where(giant, "giant", "dwarf"), vsini=rng.uniform(5, 40, n),
         shape_a=rng.uniform(0.0, 0.5, n),     # second-harmonic (double dip)
         shape_b=rng.uniform(0.2, 0.6, n),     # spot-evolution strength
         shape_c=rng.uniform(100, 400, n))  # spot lifetime (d)  # fmt: skip


def _sr(rng, n, out, idx):
    # SR: overtone PL sequence ~0.28 dex shorter than the Mira sequence:
    # M_K = -3.51 (logP + 0.28 - 2.38) - 7.25; K5-M7 giants with mild dust.
    log_p = np.clip(rng.normal(1.9, 0.33, n), 1.2, 2.8)
    teff = np.clip(rng.normal(3500, 250, n), 2900, 4200)
    m_k = -3.51 * (log_p + 0.28 - 2.38) - 7.25 + rng.normal(0, 0.45, n)
    lsp = rng.random(n) < 0.3
    _set(out, idx, log_p=log_p, teff=teff, giant=True, logg=rng.normal(0.8, 0.3, n),
         feh=rng.normal(-0.2, 0.3, n), m_k=m_k, m_v=m_k + v_k_of(teff),
         amp_v=np.clip(rng.lognormal(np.log(0.55), 0.6, n), 0.1, 2.5),
         population="old", dust=rng.uniform(0.0, 0.35, n),
         shape_a=rng.uniform(0.2, 0.6, n),     # irregularity
         shape_b=rng.uniform(0.5, 0.75, n),    # second-mode period ratio
         lsp_log_p=np.where(lsp, log_p + np.log10(rng.uniform(5, 10, n)),
                            np.nan))  # fmt: skip


def _mira(rng, n, out, idx):
    # Mira: logP ~ N(2.45, 0.15); Whitelock+2008 K-band PL; ~90 % O-rich,
    # ~10 % carbon; large amplitude (2.5-7 mag), strong IR excess from dust.
    log_p = np.clip(rng.normal(2.45, 0.15, n), 1.95, 3.0)
    carbon = rng.random(n) < 0.12
    teff = np.clip(rng.normal(2900, 220, n), 2400, 3400)
    m_k = -3.51 * (log_p - 2.38) - 7.25 + rng.normal(0, 0.2, n)
    _set(out, idx, log_p=log_p, teff=teff, giant=True, logg=rng.normal(0.0, 0.3, n),
         feh=rng.normal(-0.1, 0.3, n), m_k=m_k, m_v=m_k + v_k_of(teff),
         amp_v=np.clip(rng.normal(4.0, 1.1, n), 2.5, 7.0), population="old",
         subtype=np.where(carbon, "carbon", "oxygen"),
         dust=rng.uniform(0.4, 1.0, n) * np.where(carbon, 1.3, 1.0),
         shape_a=rng.uniform(0.3, 0.48, n),    # rise fraction
         shape_b=rng.uniform(0.15, 0.4, n))  # cycle-to-cycle scatter  # fmt: skip


def _cep(rng, n, out, idx):
    # Classical Cepheids (unseen): logP ~ N(0.8, 0.25); M_V = -2.43(logP-1)-4.05.
    log_p = np.clip(rng.normal(0.8, 0.25, n), 0.3, 1.6)
    _set(out, idx, log_p=log_p, amp_v=np.clip(rng.normal(0.7, 0.2, n), 0.2, 1.3),
         teff=rng.normal(5800, 350, n), logg=rng.normal(1.8, 0.3, n),
         feh=rng.normal(0.0, 0.15, n), giant=True, population="young",
         m_v=-2.43 * (log_p - 1.0) - 4.05 + rng.normal(0, 0.2, n),
         vsini=rng.uniform(5, 20, n), shape_a=rng.uniform(0.15, 0.3, n),
         subtype="DCEP")  # fmt: skip


def _lsp(rng, n, out, idx):
    # Long-secondary-period red giants (unseen): sequence D, LSP dominates.
    _sr(rng, n, out, idx)
    base = out["log_p"][idx]
    out["lsp_log_p"][idx] = base + np.log10(rng.uniform(6, 10, n))
    out["amp_v"][idx] = np.clip(rng.lognormal(np.log(0.4), 0.4, n), 0.1, 1.5)
    out["subtype"][idx] = "seqD"


def _rrd(rng, n, out, idx):
    # Double-mode RR Lyrae (unseen): first overtone + fundamental, P1/P0 = 0.745.
    _rrc(rng, n, out, idx)
    out["log_p"][idx] = np.clip(rng.normal(-0.45, 0.03, n), -0.55, -0.35)
    out["shape_b"][idx] = rng.uniform(0.4, 0.9, n)  # fundamental / overtone amplitude
    out["subtype"][idx] = "RRd"


_SAMPLERS = {
    "EW": _ew, "EB": _eb, "EA": _ea, "RRAB": _rrab, "RRC": _rrc, "HADS": _hads,
    "DSCT": _dsct, "ROT": _rot, "SR": _sr, "M": _mira, "CEP": _cep, "LSP": _lsp,
    "RRD": _rrd,
}  # fmt: skip
