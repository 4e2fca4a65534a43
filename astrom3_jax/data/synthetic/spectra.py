"""LAMOST-LRS-like spectra from Teff, log g, [Fe/H], plus the two FITS layouts.

`synthesize` draws spectra on the LAMOST grid `WAVE`; `fits_one_hdu` and
`fits_two_hdu` write the release's two file layouts.
"""

from __future__ import annotations

import gzip

import numpy as np
from astropy.io import fits

# Grid: log-linear, lambda_i = 10**(3.5682 + 1e-4 i), 3909 pixels (3700-9100 A,
# vacuum), resolution R ~ 1800.
COEFF0, COEFF1, NPIX = 3.5682, 1.0e-4, 3909
WAVE = 10 ** (COEFF0 + COEFF1 * np.arange(NPIX))
_VAC = 1.00028  # air -> vacuum, roughly

# (centre, base depth, intrinsic sigma A) ; groups scaled by strength laws.
_BALMER = [(6562.8, 0.55, 6.0), (4861.3, 0.6, 5.0), (4340.5, 0.6, 4.5),
           (4101.7, 0.6, 4.0), (3970.1, 0.55, 3.5), (3889.1, 0.5, 3.0)]  # fmt: skip
_CAHK = [(3933.7, 0.75, 3.0), (3968.5, 0.7, 3.0)]
_METALS = [(4226.7, 0.35, 1.5), (4300.0, 0.3, 7.0), (5167.3, 0.3, 1.5),
           (5172.7, 0.35, 1.5), (5183.6, 0.35, 1.5), (5269.5, 0.2, 1.5),
           (4383.5, 0.2, 1.5), (5890.0, 0.35, 1.5), (5895.9, 0.3, 1.5),
           (6495.0, 0.15, 1.5), (5328.0, 0.15, 1.5)]  # fmt: skip
_CAT = [(8498.0, 0.35, 2.0), (8542.1, 0.45, 2.5), (8662.1, 0.4, 2.5)]
_NA8190 = [(8183.3, 0.35, 2.0), (8194.8, 0.35, 2.0)]
_TIO = [4762, 4954, 5167, 5448, 5847, 6159, 6651, 7054, 7589, 8432, 8859]
_VO = [7400, 7900]
_C2 = [4737, 5165, 5636]
_CN = [6925, 7088, 7873, 8063, 9100]
_TELLURIC = [
    (6867, 6884, 0.35),
    (7594, 7621, 0.6),
    (7160, 7340, 0.06),
    (8130, 8350, 0.06),
]


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _planck(wave_a, teff):
    x = 1.4388e8 / (wave_a[None, :] * teff[:, None])
    return 1 / (wave_a[None, :] ** 5 * np.expm1(np.clip(x, 1e-6, 80)))


def _lines(wave, lines, strength, sigma_extra, rv):
    """Sum of Gaussian optical depths for a line list with per-star strength."""
    tau = np.zeros((len(strength), len(wave)))
    for centre, depth, width in lines:
        c = centre * _VAC * (1 + rv / 2.998e5)[:, None]
        sig = np.sqrt(
            width**2 + (centre / 1800 / 2.355) ** 2 + sigma_extra[:, None] ** 2
        )
        tau += (depth * strength)[:, None] * np.exp(
            -0.5 * ((wave[None, :] - c) / sig) ** 2
        )
    return tau


def _bands(wave, heads, depth, length, redward=True):
    """Molecular bands: sharp head, exponential recovery (red- or blue-ward)."""
    tau = np.zeros((len(depth), len(wave)))
    for h in heads:
        x = (wave - h) if redward else (h - wave)
        prof = np.where(x >= 0, np.exp(-np.clip(x, 0, None) / length), 0.0)
        tau += depth[:, None] * prof[None, :]
    return tau


def synthesize(stars: dict, rng: np.random.Generator, wave: np.ndarray = WAVE):
    """Noisy spectra for a batch: returns flux, ivar (B, len(wave)), snr_r (B,).

    Planck continuum x extinction x a smooth instrument response with an arm
    join near 5800 A, times absorption lines whose strengths follow
    Teff/log g/[Fe/H] (Balmer peaking near A0, Ca II/metals growing toward
    K, TiO from ~4000 K, C2/CN for carbon Miras, Na I 8190 in dwarfs, Ca
    triplet stronger in giants), plus emission where the physics puts it
    (Mira Balmer near maximum, chromospheric Ca II/H-alpha in ROT).
    """
    teff = stars["teff_spec"]
    logg, feh, cls = stars["logg"], stars["feh"], stars["true_class"]
    b = len(teff)
    rv = stars["rv"]
    cont = _planck(wave, teff)
    cont /= cont[:, (wave > 6900) & (wave < 7100)].mean(axis=1, keepdims=True)
    # Interstellar extinction ~ lambda^-1.3 normalised at 5500 A.
    cont *= 10 ** (-0.4 * stars["a_v"][:, None] * (5500 / wave[None, :]) ** 1.3)

    metal = 10 ** (0.45 * np.clip(feh, -2.5, 0.5))
    s_balmer = np.exp(-(((teff - 9300) / 2700) ** 2)) * (1 + 0.15 * (logg - 4))
    s_cahk = _sigmoid((8200 - teff) / 700) * metal**0.5
    s_metal = _sigmoid((6800 - teff) / 650) * metal
    s_cat = (
        _sigmoid((7000 - teff) / 900)
        * metal**0.6
        * (1 + 0.25 * np.clip(3.5 - logg, 0, 3))
    )
    s_na = _sigmoid((4300 - teff) / 300) * np.clip(logg - 3.8, 0, 1) * 2.0
    broad = stars["vsini"] / 2.998e5 * 5500 / 1.5
    balmer_w = 1 + 0.6 * np.clip(logg - 3, 0, 2)
    tau = _lines(wave, _BALMER, s_balmer, broad * balmer_w, rv)
    tau += _lines(wave, _CAHK, s_cahk, broad, rv)
    tau += _lines(wave, _METALS, s_metal, broad, rv)
    tau += _lines(wave, _CAT, s_cat, broad, rv)
    tau += _lines(wave, _NA8190, s_na, broad, rv)

    carbon = stars["subtype"] == "carbon"
    d_tio = np.clip((4050 - teff) / 1100, 0, 1) ** 1.1 * 1.2 * ~carbon
    tau += _bands(wave, _TIO, d_tio, 120.0)
    tau += _bands(wave, _VO, np.clip((3000 - teff) / 500, 0, 1) * 0.6 * ~carbon, 150.0)
    tau += _bands(wave, _C2, 1.0 * carbon, 90.0, redward=False)
    tau += _bands(wave, _CN, 0.7 * carbon, 150.0)
    flux = cont * np.exp(-tau)

    # Emission: Mira Balmer near maximum (H-delta, H-gamma strongest, H-beta
    # swallowed by TiO); chromospheric Ca II H&K cores and H-alpha in ROT.
    mira_em = (
        (cls == "M") * (np.cos(2 * np.pi * stars["phase"]) > 0.2) * rng.uniform(1, 6, b)
    )
    rot_em = (cls == "ROT") * rng.uniform(0.3, 1.5, b)
    em = np.zeros_like(flux)
    emission = ((4101.7, 1.0, 0.0), (4340.5, 1.0, 0.0), (4861.3, 0.2, 0.0),
                (6562.8, 0.5, 0.6), (3933.7, 0.0, 1.0), (3968.5, 0.0, 0.8))  # fmt: skip
    for centre, amp_m, amp_r in emission:
        c = centre * _VAC * (1 + rv / 2.998e5)[:, None]
        prof = np.exp(-0.5 * ((wave[None, :] - c) / (centre / 1800 / 2.355)) ** 2)
        level = cont[:, int(np.argmin(np.abs(wave - centre)))] + 0.3 * cont.mean(axis=1)
        em += ((amp_m * mira_em + amp_r * rot_em) * level)[:, None] * prof
    flux = flux + em

    for lo, hi, depth in _TELLURIC:
        m = (wave >= lo) & (wave <= hi)
        flux[:, m] *= 1 - depth * rng.uniform(0.5, 1.0, (b, 1))

    # Instrument response: two arms, a join step near 5800 A, smooth distortion.
    blue = _sigmoid((5800 - wave) / 25)
    edges = _sigmoid((wave - 3760) / 45) * _sigmoid((9030 - wave) / 40)
    step = rng.normal(1.0, 0.08, (b, 1))
    x = (wave - 6400) / 2700
    poly = (
        1 + rng.normal(0, 0.08, (b, 1)) * x + rng.normal(0, 0.06, (b, 1)) * (x**2 - 0.3)
    )
    resp = (blue[None, :] * step + (1 - blue[None, :])) * edges[None, :] * poly
    flux = flux * np.clip(resp, 0.02, None)

    # v_mean is the observed magnitude, extinction included, and the
    # continuum above is already reddened: the scale undoes a_v so that the
    # flux near 5500 A follows v_mean instead of counting the dust twice.
    scale = (
        10 ** (-0.4 * (stars["v_mean"] - stars["a_v"] - 14))
        * 800
        * rng.lognormal(0, 0.4, b)
    )
    flux *= scale[:, None]
    # S/N: ~100 at r=13 falling with magnitude; Poisson-like per pixel.
    snr_r = np.clip(
        90 * 10 ** (-0.32 * (stars["r_mag"] - 13)) * rng.lognormal(0, 0.4, b), 3, 400
    )
    red_level = np.median(flux[:, (wave > 6000) & (wave < 8000)], axis=1)
    sig = (red_level / snr_r)[:, None] * np.sqrt(
        0.75 * np.clip(flux, 0, None) / red_level[:, None] + 0.25
    )
    sig = sig / np.clip(resp, 0.05, None) ** 0.3
    noisy = flux + rng.normal(0, 1, flux.shape) * sig
    ivar = 1 / sig**2
    bad = rng.random(flux.shape) < 0.002
    ends = (wave < 3720) | (wave > 9050)
    ivar = np.where(bad | ends[None, :], 0.0, ivar)
    sky = rng.random(b) < 0.15
    for line in (5578.9, 6302.0):
        noisy[sky] += (red_level[sky, None] * 0.5) * np.exp(
            -0.5 * ((wave - line) / 1.5) ** 2
        )
    return portable_float32(noisy), portable_float32(ivar), snr_r


def portable_float32(x: np.ndarray, bits: int = 20) -> np.ndarray:
    """x kept to `bits` of float32's 24 mantissa bits (about 6 digits).

    The last bits of NumPy's vectorised exp/log differ between CPUs; rounding
    them away with exact operations (frexp, rint, ldexp) makes the written
    spectra the same on every x86 CPU, and the float32 cast is then exact.
    """
    mantissa, exponent = np.frexp(np.asarray(x, np.float64))
    return np.ldexp(np.rint(mantissa * 2.0**bits) / 2.0**bits, exponent).astype(
        np.float32
    )


def fits_one_hdu(flux, ivar, header_cards) -> bytes:
    """Layout (a): 2-D primary image, rows flux, ivar, (unused), masks; COEFF0/1."""
    n = len(flux)
    data = np.zeros((5, n), ">f4")
    data[0], data[1] = flux, ivar
    data[3] = np.where(ivar == 0, 1, 0)
    data[4] = data[3]
    hdu = fits.PrimaryHDU(data)
    for key, value in header_cards:
        hdu.header[key] = value
    hdu.header["COEFF0"] = (COEFF0, "log10 wavelength of pixel 0 (A)")
    hdu.header["COEFF1"] = (COEFF1, "log10 wavelength step per pixel")
    return _header_bytes(hdu.header) + _padded(data.tobytes())


def fits_two_hdu(flux, ivar, wave, header_cards) -> bytes:
    """Layout (b): empty primary + one-row binary table (FLUX, IVAR, WAVELENGTH)."""
    n = len(flux)
    rec = np.zeros(1, dtype=[("FLUX", ">f4", (n,)), ("IVAR", ">f4", (n,)),
                             ("WAVELENGTH", ">f4", (n,)), ("ANDMASK", ">i4", (n,)),
                             ("ORMASK", ">i4", (n,))])  # fmt: skip
    rec["FLUX"][0], rec["IVAR"][0], rec["WAVELENGTH"][0] = flux, ivar, wave
    rec["ANDMASK"][0] = np.where(ivar == 0, 1, 0)
    rec["ORMASK"][0] = rec["ANDMASK"][0]
    primary = fits.PrimaryHDU()
    for key, value in header_cards:
        primary.header[key] = value
    table = fits.BinTableHDU(rec, name="COADD")
    return (
        _header_bytes(primary.header)
        + _header_bytes(table.header)
        + _padded(rec.tobytes())
    )


def _header_bytes(header) -> bytes:
    # Header serialised directly (astropy's table writer byte-swaps slowly);
    # the result is byte-identical to HDUList.writeto.
    return header.tostring().encode("ascii")


def _padded(data: bytes) -> bytes:
    return data + b"\0" * ((-len(data)) % 2880)


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (mtime 0, no file name)."""
    return gzip.compress(data, compresslevel=6, mtime=0)
