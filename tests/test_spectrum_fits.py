"""The NumPy reader of LAMOST FITS files against astropy and against a file
written byte by byte; files outside its subset must go to astropy."""

import gzip

import numpy as np
import pytest
from astropy.io import fits

from astrom3_jax.data import release_io, spectrum_fits
from astrom3_jax.data.synthetic import spectra

N = 3909
COEFF0, COEFF1 = 3.5682, 1e-4


def _arrays(dtype=np.float32):
    rng = np.random.default_rng(1)
    flux = (100 + 10 * rng.standard_normal(N)).astype(dtype)
    ivar = rng.uniform(0.1, 2.0, N).astype(dtype)
    wave = 10 ** (COEFF0 + np.arange(N) * COEFF1)
    return wave, flux, ivar


def _astropy(path):
    return release_io._read_spectrum_astropy(path, "")


def _layouts(tmp_path):
    """Every layout the readers meet: the synthetic release's own writers and
    astropy's (float64 image, mixed E/D table), each plain and gzipped."""
    wave, flux, ivar = _arrays()
    image = fits.PrimaryHDU(np.stack([flux, ivar, flux]).astype(np.float64))
    image.header["COEFF0"], image.header["COEFF1"] = COEFF0, COEFF1
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="FLUX", format=f"{N}E", array=flux[None]),
            fits.Column(name="IVAR", format=f"{N}E", array=ivar[None]),
            fits.Column(name="WAVELENGTH", format=f"{N}D", array=wave[None]),
            fits.Column(name="ORMASK", format=f"{N}J", array=np.zeros((1, N))),
        ]
    )
    written = {
        "synthetic_one": spectra.fits_one_hdu(flux, ivar, [("OBJNAME", "a'b")]),
        "synthetic_two": spectra.fits_two_hdu(flux, ivar, wave, [("RA", 1.5)]),
    }
    for name, hdus in (
        ("astropy_one", fits.HDUList([image])),
        ("astropy_two", fits.HDUList([fits.PrimaryHDU(), table])),
    ):
        hdus.writeto(tmp_path / name)
        written[name] = (tmp_path / name).read_bytes()
    paths = []
    for name, data in written.items():
        for suffix, content in ((".fits", data), (".fits.gz", gzip.compress(data))):
            path = tmp_path / (name + suffix)
            path.write_bytes(content)
            paths.append(path)
    return paths


def test_every_layout_reads_as_astropy_reads_it(tmp_path):
    for path in _layouts(tmp_path):
        fast = spectrum_fits.arrays(path.read_bytes())
        assert fast is not None, f"{path.name} fell back to astropy"
        slow = _astropy(path)
        np.testing.assert_array_equal(np.stack(fast, axis=1), slow, err_msg=path.name)
        np.testing.assert_array_equal(release_io.read_spectrum(path), slow)


def _card(text: str) -> bytes:
    return text.ljust(80).encode("ascii")


def _handmade(coeff0_text: str, data: np.ndarray) -> bytes:
    cards = [
        "SIMPLE  =                    T / conforms to FITS",
        "BITPIX  =                  -32",
        "NAXIS   =                    2",
        f"NAXIS1  = {data.shape[1]:20d}",
        f"NAXIS2  = {data.shape[0]:20d}",
        "OBJNAME = 'it''s / not a comment' / the quote is escaped",
        f"COEFF0  = {coeff0_text:>20} / log10 wavelength of pixel 0",
        "COEFF1  =               1.0E-4",
        "END",
    ]
    head = b"".join(_card(c) for c in cards)
    head += b" " * ((-len(head)) % 2880)
    body = data.astype(">f4").tobytes()
    return head + body + b"\0" * ((-len(body)) % 2880)


def test_a_file_written_byte_by_byte():
    data = np.array([[1.5, -2.0, 3.25, 0.0], [0.5, 0.25, 0.0, 4.0]])
    # FITS allows a D exponent; 3.5682D0 is 3.5682.
    wave, flux, ivar = spectrum_fits.arrays(_handmade("3.5682D0", data))
    np.testing.assert_array_equal(flux, data[0])
    np.testing.assert_array_equal(ivar, data[1])
    np.testing.assert_allclose(wave, [10 ** (3.5682 + i * 1e-4) for i in range(4)])
    head, _ = spectrum_fits._header(memoryview(_handmade("1.0", data)), 0)
    assert spectrum_fits._value(head, "OBJNAME") == "it's / not a comment"


def _scaled_integer_image(path):
    hdu = fits.PrimaryHDU(np.arange(2 * N, dtype=np.int16).reshape(2, N))
    hdu.header["BSCALE"], hdu.header["BZERO"] = 0.5, 10.0
    hdu.header["COEFF0"], hdu.header["COEFF1"] = COEFF0, COEFF1
    hdu.writeto(path)


def _heap_table(path):
    column = fits.Column(
        name="FLUX", format="PE()", array=np.array([np.ones(5, np.float32)], object)
    )
    extra = [fits.Column(name=n, format="E", array=[1.0]) for n in ("IVAR", "WAVE")]
    fits.HDUList(
        [fits.PrimaryHDU(), fits.BinTableHDU.from_columns([column, *extra])]
    ).writeto(path)


@pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")
def test_files_outside_the_subset_go_to_astropy(tmp_path):
    scaled = tmp_path / "scaled.fits"
    _scaled_integer_image(scaled)
    assert spectrum_fits.arrays(scaled.read_bytes()) is None
    # astropy applies the scale; read_spectrum must give its values.
    np.testing.assert_array_equal(
        release_io.read_spectrum(scaled)[:5, 1], 0.5 * np.arange(5) + 10.0
    )
    heap = tmp_path / "heap.fits"
    _heap_table(heap)
    assert spectrum_fits.arrays(heap.read_bytes()) is None
    one = tmp_path / "synthetic_one.fits"
    _, flux, ivar = _arrays()
    data = spectra.fits_one_hdu(flux, ivar, [])
    cases = [
        (data[: len(data) // 2], True),  # truncated in the data
        (data[:2000], True),  # truncated in the header
        (b"not a FITS file at all" * 200, True),
        (data + data, False),  # a second primary HDU where an extension belongs
    ]
    for broken, refused in cases:
        assert spectrum_fits.arrays(broken) is None
        one.write_bytes(broken)
        if refused:
            with pytest.raises(release_io.ReleaseError, match="synthetic_one.fits"):
                release_io.read_spectrum(one, obj="ASASSN-V J1")


def test_table_columns_of_different_lengths_are_refused_by_name(tmp_path):
    wave, flux, ivar = _arrays()
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="FLUX", format=f"{N}E", array=flux[None]),
            fits.Column(name="IVAR", format=f"{N}E", array=ivar[None]),
            fits.Column(name="WAVELENGTH", format=f"{N - 1}D", array=wave[None, 1:]),
        ]
    )
    path = tmp_path / "short_wave.fits"
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    assert spectrum_fits.arrays(path.read_bytes()) is None
    with pytest.raises(release_io.ReleaseError, match="differ in length") as err:
        release_io.read_spectrum(path, obj="ASASSN-V J2")
    assert "short_wave.fits" in str(err.value) and "ASASSN-V J2" in str(err.value)
