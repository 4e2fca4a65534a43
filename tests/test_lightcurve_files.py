"""Light-curve layouts, band choice and cleaning, against hand counts.

Real files (tests/fixtures/real_formats, see its README) for the ASAS-SN
layouts that were downloaded; every other layout is written here from a
synthetic star, the way its survey writes it, awkward rows included.
"""

import csv
import os

import numpy as np
import pytest

from astrom3_jax import errors
from astrom3_jax.data import catalog, catalog_rows, lightcurve_files, release_io
from astrom3_jax.data.lightcurve_cleaning import RECORD_FIELDS
from astrom3_jax.data.normalisation import NormalisationStats
from tests.helpers.paths import DUMMY, ROOT
from tests.helpers.release import dummy_release_rows, write_catalog

REAL = os.path.join(ROOT, "tests", "fixtures", "real_formats")
SHARED = "/work/shared/real_formats/3016935867962755968_skypatrol.csv"
VARDB = ("ASASSN-V_J000630.89+791142.0.csv", "ASASSN-V_J000059.21+605732.5.csv")
SKYPATROL = os.path.join(REAL, "3016935867962755968_skypatrol_excerpt.csv")
INFO = os.path.join(DUMMY, "splits", "full", "42", "info.json")
LN10_25 = np.log(10.0) / 2.5


def _read(path, **kw):
    return lightcurve_files.read_light_curve(path, **kw)


def _counts(record):
    return {k: v for k, v in record.as_dict().items() if k.startswith("dropped_") and v}


def _flux(mag, err, zp=16.4):
    f = 10 ** (-0.4 * (np.asarray(mag) - zp))
    return f, f * np.asarray(err) * LN10_25


def _star(n, t0=2458000.0, step=1.37, base=13.0):
    """Times, magnitudes (3 decimals) and errors of a synthetic variable."""
    t = t0 + step * np.arange(n)
    mag = np.round(base + 0.3 * np.sin(2 * np.pi * t / 0.71), 3)
    return t, mag, np.full(n, 0.021)


def _refusal(path, match, **kw):
    with pytest.raises(release_io.ReleaseError) as err:
        _read(path, **kw)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and match in msg, msg
    assert isinstance(err.value, errors.UserError)
    return msg


# ------------------------------------------------------------ real files
@pytest.mark.parametrize("name", VARDB)
def test_real_vardb_export_is_read_as_is(name):
    path = os.path.join(REAL, name)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    lc, rec = _read(path)
    assert rec.layout == "vardb_csv" and rec.band == "" and _counts(rec) == {}
    assert rec.n_points == len(rows) == len(lc)
    want = [[float(r[c]) for c in ("hjd", "flux", "flux_err")] for r in rows]
    np.testing.assert_array_equal(lc, want)  # file order, flux as written


def test_real_skypatrol_v1_excerpt_v_then_g():
    lc, rec = _read(SKYPATROL)
    # 127 V rows: 117 measurements (3 share HJD 2458360.49977), 4 '>' limits,
    # 6 rows of 99.990; 95 g rows.
    assert (rec.layout, rec.band, rec.n_points) == ("skypatrol_v1", "V", 115)
    assert _counts(rec) == {
        "dropped_other_band": 95, "dropped_nondetection": 4,
        "dropped_sentinel": 6, "dropped_duplicate": 2,
    }  # fmt: skip
    np.testing.assert_array_equal(lc[0], [2456004.82362, 4.656, 0.142])
    (dup,) = np.nonzero(lc[:, 0] == 2458360.49977)[0]  # the first of three
    np.testing.assert_array_equal(lc[dup], [2458360.49977, 4.896, 0.324])
    g, rec_g = _read(SKYPATROL, band="g")
    assert (rec_g.band, rec_g.n_points) == ("g", 89)
    assert _counts(rec_g) == {
        "dropped_other_band": 127, "dropped_nondetection": 2,
        "dropped_sentinel": 2, "dropped_duplicate": 2,
    }  # fmt: skip
    np.testing.assert_array_equal(g[-1], [2459332.45786, 2.968, 0.468])


@pytest.mark.skipif(not os.path.exists(SHARED), reason="full download not here")
def test_real_skypatrol_v1_full_file():
    # Its README: 1,249 V and 2,336 g rows, 142 '>' limits, 112 rows of 99.990.
    _, v = _read(SHARED)
    _, g = _read(SHARED, band="G")  # a unique case-insensitive match
    assert (v.band, v.n_points, g.band, g.n_points) == ("V", 1160, "g", 2167)
    assert v.dropped_other_band == 2336 and g.dropped_other_band == 1249
    assert v.dropped_nondetection + g.dropped_nondetection == 142
    assert v.dropped_sentinel + g.dropped_sentinel == 112
    assert v.dropped == 1249 + 2336 - 1160


# ------------------------------------------------- synthetic survey layouts
def test_skypatrol_v2_comments_quality_limits(tmp_path):
    tv, mv, ev = _star(20)
    tg, mg, eg = _star(30, t0=2459000.0, base=13.4)
    fv, sv = _flux(mv, ev)
    lines = [
        "# Sky Patrol v2 light curve",
        "# asas_sn_id: 661425147389, ra: 270.1, dec: -30.2",
        "jd,flux,flux_err,mag,mag_err,limit,fwhm,image_id,camera,quality,phot_filter",
    ]
    for i in range(20):
        lines.append(
            f"{float(tv[i])!r},{fv[i]:.5f},{sv[i]:.5f},{mv[i]:.3f},{ev[i]:.3f},17.2,1.8,"
            f"bd{100 + i},bd,G,V"
        )
    lines += [
        f"{tv[-1] + 1},1.1,0.4,13.9,0.05,17.1,1.9,bd900,bd,B,V",  # bad quality
        f"{tv[-1] + 2},0.3,0.2,>17.120,99.990,17.12,1.9,bd901,bd,G,V",  # limit
        f"{tv[-1] + 3},0.2,0.2,>16.980,99.990,16.98,2.0,bd902,bd,G,V",  # limit
        f"{tv[-1] + 4},99.990,99.990,99.990,99.990,17.0,2.0,bd903,bd,G,V",
    ]
    fg, sg = _flux(mg, eg)
    for i in range(30):
        lines.append(
            f"{float(tg[i])!r},{fg[i]:.5f},{sg[i]:.5f},{mg[i]:.3f},{eg[i]:.3f},17.9,1.7,"
            f"bi{i},bi,G,g"
        )
    lines.append(lines[-1])  # a repeated g row
    path = tmp_path / "v2.csv"
    path.write_text("\n".join(lines) + "\n")
    lc, rec = _read(path)
    assert (rec.layout, rec.band, rec.n_points) == ("skypatrol_v2", "V", 20)
    assert _counts(rec) == {
        "dropped_other_band": 31, "dropped_quality": 1,
        "dropped_nondetection": 2, "dropped_sentinel": 1,
    }  # fmt: skip
    np.testing.assert_array_equal(lc[:, 1], [float(f"{x:.5f}") for x in fv])
    lc_g, rec_g = _read(path, band="g")
    assert (rec_g.n_points, rec_g.dropped_duplicate) == (30, 1)
    assert rec_g.dropped_other_band == 24
    np.testing.assert_array_equal(lc_g[:, 0], tg)


def test_tab_separated_with_header(tmp_path):
    t, m, e = _star(12)
    path = tmp_path / "lc.tsv"
    rows = "".join(
        f"{float(a)!r}\t{b:.3f}\t{c:.3f}\n" for a, b, c in zip(t, m, e, strict=True)
    )
    path.write_text("jd\tmag\tmag_err\n" + rows)
    lc, rec = _read(path)
    f, s = _flux(m, e)
    assert rec.n_points == 12 and rec.layout == "table" and _counts(rec) == {}
    np.testing.assert_array_equal(lc[:, 0], t)
    np.testing.assert_allclose(lc[:, 1], f, rtol=1e-12)
    np.testing.assert_allclose(lc[:, 2], s, rtol=1e-12)


def test_whitespace_header_and_sentinels(tmp_path):
    t, m, e = _star(10)
    m[3], e[5], e[7] = 99.99, 99.99, 9.999 + 90  # placeholders
    m[8] = -99.0
    path = tmp_path / "lc.txt"
    body = "".join(
        f"  {a:.5f}    {b:8.3f}  {c:6.3f}\n" for a, b, c in zip(t, m, e, strict=True)
    )
    path.write_text("  HJD        Mag      MagErr\n" + body)
    lc, rec = _read(path)
    assert rec.n_points == 6 and _counts(rec) == {"dropped_sentinel": 4}
    kept = [float(f"{x:.5f}") for x in t[[0, 1, 2, 4, 6, 9]]]
    np.testing.assert_array_equal(lc[:, 0], kept)


def test_headerless_three_columns_and_comment_header(tmp_path):
    t, m, e = _star(8)
    body = "".join(
        f"{float(a)!r} {float(b)!r} {float(c)!r}\n"
        for a, b, c in zip(t, m, e, strict=True)
    )
    plain = tmp_path / "plain.dat"  # not the release's 5 columns: a table
    plain.write_text(body)
    lc, rec = _read(plain)
    assert rec.layout == "headerless" and rec.n_points == 8
    np.testing.assert_allclose(lc[:, 1:], np.stack(_flux(m, e), 1), rtol=1e-12)
    commented = tmp_path / "commented.csv"
    text = "# my photometry\n# JD, mag, mag_err\n" + body.replace(" ", ",")
    commented.write_text(text)
    lc2, rec2 = _read(commented)
    assert rec2.layout == "table"
    np.testing.assert_array_equal(lc2, lc)


def test_headerless_other_width_is_refused_then_named(tmp_path):
    t, m, e = _star(6)
    path = tmp_path / "five.txt"
    rows = "".join(
        f"{float(a)!r},{i},{float(b)!r},{float(c)!r},{'V' if i % 2 else 'g'}\n"
        for i, (a, b, c) in enumerate(zip(t, m, e, strict=True))
    )
    path.write_text(rows)
    _refusal(path, "no header line and 5 columns")
    msg = _refusal(path, "lc_columns")
    assert "time,mag,mag_err" in msg
    lc, rec = _read(path, columns="time,-,mag,mag_err,band")
    assert rec.layout == "named_columns" and rec.band == "V" and rec.n_points == 3
    np.testing.assert_array_equal(lc[:, 0], t[1::2])
    _, rec_g = _read(path, columns="time, skip, mag, mag_err, filter", band="g")
    assert rec_g.n_points == 3 and rec_g.dropped_other_band == 3


def test_five_bands_in_one_file(tmp_path):
    """A multi-band survey table (Stripe 82 style: -99.99 for no measurement)."""
    lines = ["MJD,band,mag,mag_err"]
    n = {"u": 5, "g": 4, "r": 9, "i": 7, "z": 6}
    for band, count in n.items():
        t, m, e = _star(count, t0=52000.0 + "ugriz".index(band) * 0.002)
        for a, b, c in zip(t, m, e, strict=True):
            lines.append(f"{a:.5f},{band},{b:.3f},{c:.3f}")
    lines.append("52100.0,g,-99.99,-99.99")
    lines.append("52101.0,r,-99.99,-99.99")
    path = tmp_path / "s82.csv"
    path.write_text("\n".join(lines) + "\n")
    _, rec = _read(path)  # no V: g, although r has more points
    assert (rec.band, rec.n_points) == ("g", 4)
    assert _counts(rec) == {"dropped_other_band": 5 + 10 + 7 + 6, "dropped_sentinel": 1}
    no_g = tmp_path / "no_g.csv"
    no_g.write_text("\n".join(ln for ln in lines if ",g," not in ln) + "\n")
    _, rec = _read(no_g)  # neither V nor g: the most usable points
    assert (rec.band, rec.n_points, rec.dropped_sentinel) == ("r", 9, 1)


def test_v_without_enough_points_falls_to_g(tmp_path):
    lines = ["hjd,filter,mag,mag_err", "2458000.1,V,13.1,0.02", "2458001.1,V,>16,99.99"]
    t, m, e = _star(5)
    lines += [f"{float(a)!r},g,{b},{c}" for a, b, c in zip(t, m, e, strict=True)]
    path = tmp_path / "vg.csv"
    path.write_text("\n".join(lines) + "\n")
    _, rec = _read(path)
    assert (rec.band, rec.n_points, rec.dropped_other_band) == ("g", 5, 2)
    msg = _refusal(path, "1 usable point(s) in band V", band="V")
    assert "5 other band" in msg and "1 nondetection" in msg
    _refusal(
        path, "band 'r' is not in the file, which has V (2 rows), g (5 rows)", band="r"
    )


def test_bad_errors_missing_values_and_limit_flags(tmp_path):
    lines = ["time,flux,flux_err,upper_limit"]
    t = 58000.0 + np.arange(10)
    errs = ["0.1", "0", "-0.1", "nan", "", "0.1", "0.1", "0.1", "0.1", "0.1"]
    vals = ["1.0", "1.1", "1.2", "1.3", "1.4", "", "NaN", "<0.5", "1.8", "1.9"]
    flags = ["0", "0", "0", "0", "0", "0", "0", "0", "true", "False"]
    for row in zip(t, vals, errs, flags, strict=True):
        lines.append(",".join(map(str, row)))
    lines.append(lines[-1])
    path = tmp_path / "flux.csv"
    path.write_text("\n".join(lines) + "\n")
    lc, rec = _read(path)
    assert rec.n_points == 2 and rec.band == ""
    assert _counts(rec) == {
        "dropped_nondetection": 2, "dropped_missing": 2,
        "dropped_bad_error": 4, "dropped_duplicate": 1,
    }  # fmt: skip
    np.testing.assert_array_equal(lc, [[58000.0, 1.0, 0.1], [58009.0, 1.9, 0.1]])
    assert rec.dropped == 9 and set(rec.as_dict()) == set(RECORD_FIELDS)


def test_fits_table_with_a_band_and_a_masked_cell(tmp_path):
    from astropy.table import MaskedColumn, Table

    t, m, e = _star(6)
    mag = MaskedColumn(m, mask=[False, False, True, False, False, False])
    bands = ["g", "g", "g", "g", "V", "r"]
    Table({"TIME": t, "MAG": mag, "MAG_ERR": e, "FILTER": bands}).write(
        tmp_path / "lc.fits"
    )
    lc, rec = _read(tmp_path / "lc.fits")  # V has 1 point: g
    assert (rec.band, rec.n_points, rec.layout) == ("g", 3, "table")
    assert _counts(rec) == {"dropped_other_band": 2, "dropped_missing": 1}
    np.testing.assert_array_equal(lc[:, 0], t[[0, 1, 3]])
    np.testing.assert_allclose(lc[:, 1], _flux(m[[0, 1, 3]], e[:3])[0], rtol=1e-12)


# --------------------------------------------------------------- refusals
def test_refusals_are_one_line_naming_file_and_remedy(tmp_path):
    tab = tmp_path / "tab.tsv"
    tab.write_text("date\tbrightness\terr\n2458000.5\t12.1\t0.02\n")
    msg = _refusal(tab, "no time column among its columns (date | brightness | err)")
    assert "lc_columns" in msg
    cell = tmp_path / "cell.csv"
    cell.write_text("jd,mag,mag_err\n1.5,12.0,0.1\n2.5,abc,0.1\n")
    _refusal(cell, "column mag, line 3: 'abc' is not a number")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("jd,mag,mag_err\n1.5,12.0,0.1\n2.5,12.1\n")
    _refusal(ragged, "line 3 has 2 columns where the header has 3")
    binary = tmp_path / "lc.bin"
    binary.write_bytes(b"\x00\x01\x02jd,mag")
    _refusal(binary, "not a text table")
    empty = tmp_path / "empty.csv"
    empty.write_text("# nothing yet\n")
    _refusal(empty, "holds no table rows")
    _refusal(tmp_path / "nowhere.csv", "not found; check the catalogue's lightcurve")
    two = tmp_path / "two.csv"
    two.write_text("jd,mag,mag_err\n1.5,12.0,0.1\n1.5,12.0,0.1\n")
    _refusal(two, "1 usable point(s) after cleaning, need at least 2")


def test_release_dat_is_untouched(tmp_path):
    text = (
        "# ASAS-SN light curve\nHJD MAG MAG_ERR FLUX FLUX_ERR\n"
        "2457000.1 12.0 0.01 57.5 0.5\n2457000.1 12.0 0.01 57.5 0.5\n"
        "2457001.2 99.99 99.99 -0.3 0.5\n2457002.3 12.1 0.01 52.4 0.5\n"
    )
    path = tmp_path / "star.dat"
    path.write_text(text)
    lc, rec = _read(path, band="V")
    np.testing.assert_array_equal(lc, release_io.parse_dat(text.encode()))
    assert (rec.layout, rec.band, rec.n_points, rec.dropped) == (
        "asassn_dat",
        "V",
        4,
        0,
    )


# --------------------------------------------------------- through a catalogue
def test_catalogue_band_cell_override_and_record(tmp_path):
    t, m, e = _star(6)
    path = tmp_path / "curves" / "star.txt"
    path.parent.mkdir()
    path.write_text(
        "".join(
            f"{float(a)!r} {'V' if i % 3 else 'g'} {float(b)!r} {float(c)!r}\n"
            for i, (a, b, c) in enumerate(zip(t, m, e, strict=True))
        )
    )  # V: 4 rows, g: 2 rows, no header
    _, r = dummy_release_rows()[0]
    values = {c: r[c] for c in NormalisationStats.from_info_json(INFO).all_cols}
    base = dict(lightcurve="curves/star.txt", lc_columns="time band mag mag_err")
    rows = [
        {"id": "a", **base, **values},
        {"id": "b", **base, "band": "g", **values},
        {"id": "c", "name": "no light curve", **{**values}},
    ]
    cat = write_catalog(tmp_path / "catalog.csv", rows)
    stats = NormalisationStats.from_info_json(INFO)
    out = catalog.preprocess(cat, stats, num_workers=0, progress=False)
    a, b, c = out.examples
    assert (a.light_curve.band, a.light_curve.n_points) == ("V", 4)
    assert (b.light_curve.band, b.light_curve.n_points) == ("g", 2)
    assert c.light_curve is None
    assert a.features["photometry"].shape == (4, 3)
    # band= sets the band of rows without a band cell; the cell still decides.
    out = catalog.preprocess(cat, stats, band="g", num_workers=0, progress=False)
    assert [e.light_curve and e.light_curve.band for e in out.examples] == [
        "g", "g", None,
    ]  # fmt: skip
    with pytest.raises(catalog_rows.RowError) as err:
        catalog.preprocess(cat, stats, band="r", num_workers=0, progress=False)
    msg = str(err.value)
    assert "row 0" in msg and "star.txt" in msg and "band 'r' is not in" in msg
    assert "\n" not in msg
