"""Raw-file readers: both LAMOST FITS layouts, gzip, bad HDU counts, .dat text."""

import zipfile

import numpy as np
import pytest
from astropy.io import fits

from astrom3_jax.data import preprocessing, release_io

N = 3909
COEFF0, COEFF1 = 3.5682, 1e-4  # LAMOST LRS: log10 wavelength start and step


def _arrays():
    rng = np.random.default_rng(0)
    flux = (100 + 10 * rng.standard_normal(N)).astype(np.float32)
    flux[::50] = 0  # zeros must be ignored by the spectrum MAD in both layouts
    ivar = rng.uniform(0.1, 2.0, N).astype(np.float32)
    wave = 10 ** (COEFF0 + np.arange(N) * COEFF1)
    return wave, flux, ivar


def _one_hdu(path, flux, ivar):
    hdu = fits.PrimaryHDU(np.stack([flux, ivar, np.zeros_like(flux)]))
    hdu.header["COEFF0"], hdu.header["COEFF1"] = COEFF0, COEFF1
    hdu.writeto(path)


def _two_hdu(path, wave, flux, ivar):
    cols = [
        fits.Column(name="FLUX", format=f"{N}E", array=flux[None]),
        fits.Column(name="IVAR", format=f"{N}E", array=ivar[None]),
        fits.Column(name="WAVELENGTH", format=f"{N}D", array=wave[None]),
    ]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)


def test_both_layouts_and_gzip_give_the_same_spectrum(tmp_path):
    wave, flux, ivar = _arrays()
    paths = [tmp_path / "a.fits", tmp_path / "b.fits", tmp_path / "c.fits.gz"]
    _one_hdu(paths[0], flux, ivar)
    _two_hdu(paths[1], wave, flux, ivar)
    _one_hdu(paths[2], flux, ivar)
    with open(paths[2], "rb") as f:
        assert f.read(2) == b"\x1f\x8b"  # really gzipped
    specs = [release_io.read_spectrum(p) for p in paths]
    for s in specs:
        assert s.shape == (N, 3) and s.dtype == np.float64
        np.testing.assert_allclose(s[:, 0], wave, rtol=1e-12)
        np.testing.assert_array_equal(s[:, 1], flux)
        np.testing.assert_array_equal(s[:, 2], ivar)
    out = [preprocessing.preprocess_spectrum(s)["spectra"] for s in specs]
    assert out[0].shape == (3, 2575)
    np.testing.assert_allclose(out[1], out[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out[2], out[0])


def test_three_hdus_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "three.fits"
    fits.HDUList(
        [fits.PrimaryHDU(), fits.ImageHDU(np.zeros(3)), fits.ImageHDU(np.zeros(3))]
    ).writeto(path)
    with pytest.raises(release_io.ReleaseError, match="3 HDUs") as err:
        release_io.read_spectrum(path, obj="ASASSN-V X")
    assert "three.fits" in str(err.value) and "ASASSN-V X" in str(err.value)


def test_missing_and_corrupt_fits_name_the_file(tmp_path):
    with pytest.raises(release_io.ReleaseError, match="nothere.fits"):
        release_io.read_spectrum(tmp_path / "nothere.fits")
    bad = tmp_path / "bad.fits.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(release_io.ReleaseError, match="bad.fits.gz"):
        release_io.read_spectrum(bad)


DAT = """\
#Object: ASASSN-V J000000.00+000000.0
HJD MAG MAG_ERR FLUX FLUX_ERR
2457000.5 12.10 0.02 5.25 0.10
2457001.5  12.20 0.03   4.75 0.12

2457002.25 11.90 0.01 6.50 0.08
"""


def test_parse_dat_keeps_hjd_flux_flux_err():
    got = release_io.parse_dat(DAT.encode())
    want = [[2457000.5, 5.25, 0.10], [2457001.5, 4.75, 0.12], [2457002.25, 6.50, 0.08]]
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)


def test_read_light_curve_from_zip_strips_spaces(tmp_path):
    path = tmp_path / "photometry.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("vardb_files/ASASSN-VJ000000.00+000000.0.dat", DAT)
    with release_io.open_photometry(path) as z:
        lc = release_io.read_light_curve(z, "ASASSN-V J000000.00+000000.0")
        assert lc.shape == (3, 3)
        with pytest.raises(release_io.ReleaseError, match="missing from the zip"):
            release_io.read_light_curve(z, "other")


@pytest.mark.parametrize(
    "text,msg",
    [
        ("h1\nh2\n1 2 3 4\n", "4 columns"),
        ("h1\nh2\n1 2 3 x 5\n", "non-numeric"),
    ],
)
def test_parse_dat_bad_rows(text, msg):
    with pytest.raises(release_io.ReleaseError, match=msg) as err:
        release_io.parse_dat(text, file="f.dat", obj="obj1")
    assert "f.dat" in str(err.value) and "obj1" in str(err.value)


ROWS = "2457000.5 12.10 0.02 5.25 0.10\n2457001.5 12.20 0.03 4.75 0.12\n"
WANT = [[2457000.5, 5.25, 0.10], [2457001.5, 4.75, 0.12]]


@pytest.mark.parametrize(
    "header",
    [
        "",  # no header: nothing may be dropped
        "HJD MAG MAG_ERR FLUX FLUX_ERR\n",
        "#Object: X\n\n# more comments\nHJD MAG MAG_ERR FLUX FLUX_ERR\n",
    ],
)
def test_parse_dat_detects_header_lines_by_content(header):
    np.testing.assert_array_equal(release_io.parse_dat(header + ROWS), WANT)


def test_parse_dat_text_after_the_data_is_an_error_naming_the_line():
    text = "HJD MAG MAG_ERR FLUX FLUX_ERR\n" + ROWS + "# trailer\n"
    with pytest.raises(release_io.ReleaseError, match="light curve line 4") as err:
        release_io.parse_dat(text, file="f.dat", obj="obj1")
    assert "f.dat" in str(err.value) and "obj1" in str(err.value)
