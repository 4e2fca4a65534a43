"""The synthetic survey's instrument: cameras, the V and g eras, limits, noise,
cadence by position, class shapes, and the Sky Patrol view of a star."""

import numpy as np
import pytest

from astrom3_jax.data.lightcurve_files import read_light_curve
from astrom3_jax.data.synthetic import instrument, lightcurves, skypatrol

V_CAMERAS = {c for site in instrument.SITES.values() for c in site[1]}
G_CAMERAS = {c for site in instrument.SITES.values() for c in site[2]}


def star(**kw):
    base = dict(
        log_p=np.log10(0.6), amp_v=0.5, shape_a=0.3, shape_b=1.5, shape_c=0.0,
        shape_d=0.0, lsp_log_p=np.nan, epoch=2456300.1, v_mean=13.0, blend=0.0,
        ra=120.0, dec=10.0, g_minus_v=0.4,
    )  # fmt: skip
    base.update(kw)
    return base


def observed(cls="EW", seed=0, **kw):
    return lightcurves.observe_star(cls, star(**kw), np.random.default_rng(seed))


def test_cameras_and_eras():
    for seed in range(20):
        ob = observed(seed=seed)
        h = ob.history
        v, g = h.band == "V", h.band == "g"
        assert v.sum() > 50 and g.sum() > 50
        assert set(h.camera[v]) <= V_CAMERAS and set(h.camera[g]) <= G_CAMERAS
        # At most two cameras per site and band, each with one zero point.
        assert len(set(h.camera[v])) <= 4 and len(set(h.camera[g])) <= 4
        for cam in set(h.camera):
            assert len(set(h.zero_point[h.camera == cam])) == 1
        # The V era ends where the field's unit switched to g; g starts there.
        assert h.t[v].min() >= instrument.V_START
        assert h.t[v].max() < h.t[g].min() + 1.0
        assert instrument.SWITCH_RANGE[0] <= h.t[g].min() + 1.0
        assert h.t[v].max() <= instrument.SWITCH_RANGE[1] + 1.0
        assert h.t[g].max() <= instrument.G_END + 1.0


def test_cadence_depends_on_position():
    north = [observed(seed=s, dec=55.0) for s in range(10)]
    equator = [observed(seed=s, dec=-5.0) for s in range(10)]
    chile = set(instrument.SITES["chile"][1]) | set(instrument.SITES["chile"][2])
    # dec +55 culminates 85 deg from Chile's zenith: Hawaii only.
    assert all(not set(o.history.camera) & chile for o in north)
    assert sum(bool(set(o.history.camera) & chile) for o in equator) == 10
    # Two sites see an equatorial star on more nights.
    assert np.median([len(o.history.t) for o in equator]) > np.median(
        [len(o.history.t) for o in north]
    )
    # Seasonal gaps: longer for a field that culminates far from the zenith.
    assert instrument._season_gap(20.7, 20.7) < instrument._season_gap(-5.0, 20.7)


def test_detection_limit_and_non_detections():
    ob = observed(v_mean=16.3, amp_v=0.8, seed=3)
    h = ob.history
    limit_flux = 10 ** (-0.4 * (h.limit - instrument.ZERO_POINT))
    assert np.array_equal(ob.detected, ob.flux >= limit_flux)
    assert 0.1 < (~ob.detected).mean() < 0.9
    mag, err = ob.magnitudes(ob.flux)
    assert np.all(mag[ob.detected] <= h.limit[ob.detected] + 1e-9)
    assert np.all(mag[~ob.detected] == lightcurves.SENTINEL)
    assert np.all(err[~ob.detected] == lightcurves.SENTINEL)
    # A bright star is detected on (almost) every image.
    assert observed(v_mean=12.0, seed=3).detected.mean() > 0.99
    # The release keeps forced fluxes of non-detections, with 99.99 magnitudes.
    t, rmag, _, rflux, _ = ob.release_curve()
    assert (rmag == lightcurves.SENTINEL).any() and np.isfinite(rflux).all()


def test_limits_match_the_real_distribution():
    rng = np.random.default_rng(0)
    t = rng.uniform(2456000, 2458400, 100_000)
    v = instrument.limits(rng, t, np.full(len(t), "V"))
    g = instrument.limits(rng, t, np.full(len(t), "g"))
    # Sky Patrol V limits: 5 %, 50 %, 95 % at 15.46, 16.39, 16.92; g 0.33 deeper.
    real = [15.46, 16.39, 16.92]
    assert np.percentile(v, [5, 50, 95]) == pytest.approx(real, abs=0.1)
    assert np.median(g) - np.median(v) == pytest.approx(0.33, abs=0.02)


def test_noise_model_matches_real_files():
    # Median errors of real ASAS-SN V light curves at the median limit 16.39.
    for mag, real in ((11.4, 0.020), (13.17, 0.023), (14.95, 0.060)):
        assert instrument.sigma(np.array(mag), np.array(16.39)) == pytest.approx(
            real, rel=0.1
        )
    # A constant star's scatter is what its error bars say.
    ob = observed(amp_v=0.0, v_mean=14.0, seed=5)
    ok = ob.detected & (ob.history.band == "V")
    true = 10 ** (-0.4 * (14.0 - instrument.ZERO_POINT))
    zp = 10 ** (-0.4 * ob.history.zero_point[ok])
    pull = (ob.flux[ok] / zp - true) / ob.flux_err[ok]
    pull = pull[np.abs(pull) < 5]  # outliers
    assert 0.85 < pull.std() < 1.15 and abs(np.median(pull)) < 0.15


def test_database_calibrates_the_cameras():
    ob = observed(amp_v=0.0, v_mean=12.5, seed=7)
    h = ob.history
    v = (h.band == "V") & ob.detected
    mag, _ = ob.magnitudes(ob.flux)
    db_mag, _ = ob.magnitudes(ob.database_flux)
    cams = sorted(set(h.camera[v]))
    raw = [np.median(mag[v & (h.camera == c)]) for c in cams]
    db = [np.median(db_mag[v & (h.camera == c)]) for c in cams]
    offsets = [h.zero_point[h.camera == c][0] for c in cams]
    assert np.ptp(np.array(raw) - np.array(offsets)) < 0.01
    assert np.ptp(db) < np.ptp(offsets) / 5 + 0.005


def test_determinism_by_seed():
    a, b, c = observed(seed=11), observed(seed=11), observed(seed=12)
    for x, y in ((a.flux, b.flux), (a.history.t, b.history.t)):
        assert np.array_equal(x, y)
    assert len(a.history.t) != len(c.history.t) or not np.array_equal(a.flux, c.flux)


def _harmonics(t, dm, period):
    """|first| and |second| Fourier amplitudes of dm folded at period."""
    phase = 2 * np.pi * t / period
    design = np.column_stack(
        [np.ones_like(t)] + [f(k * phase) for k in (1, 2) for f in (np.cos, np.sin)]
    )
    coef = np.linalg.lstsq(design, dm, rcond=None)[0]
    return np.hypot(coef[1], coef[2]), np.hypot(coef[3], coef[4])


def test_ew_and_rrc_shapes_differ_at_the_catalogue_period():
    t = np.linspace(2456300, 2456310, 4000)
    rng = np.random.default_rng(0)
    ew = star(log_p=np.log10(0.6), shape_a=0.05, shape_b=1.6)
    rrc = star(log_p=np.log10(0.3), shape_a=0.35)
    dm_ew = lightcurves.template("EW", t, ew, rng)
    dm_rrc = lightcurves.template("RRC", t, rrc, rng)
    a1, a2 = _harmonics(t, dm_ew, 0.6)
    assert a2 > 5 * a1  # two nearly equal minima per orbital period
    b1, b2 = _harmonics(t, dm_rrc, 0.3)
    assert b1 > 3 * b2 > 0.02 * b1  # one cycle per period, skewed
    # Narrow minima, broad maxima: EW spends most of its time near maximum light
    # (dm < 0 is brighter); RRc's rise (to maximum) is quicker than its decline.
    assert np.mean(dm_ew < np.mean(dm_ew)) > 0.53  # a sinusoid: 0.50
    phase = (t / 0.3) % 1
    order = np.argsort(phase)
    curve = dm_rrc[order]
    rise = (phase[order][np.argmin(curve)] - phase[order][np.argmax(curve)]) % 1
    assert rise < 0.45


def test_skypatrol_file_reads_back_as_the_v_detections(tmp_path):
    ob = observed(v_mean=16.0, amp_v=0.6, seed=2)
    path = tmp_path / "star_skypatrol.csv"
    path.write_bytes(skypatrol.skypatrol_v1_csv(ob, np.random.default_rng(0)))
    lc, record = read_light_curve(path)
    h = ob.history
    v = h.band == "V"
    kept = v & ob.detected & ~ob.bad
    assert record.layout == "skypatrol_v1" and record.band == "V"
    assert record.dropped_other_band == (h.band == "g").sum()
    assert record.dropped_nondetection == (v & ~ob.detected & ~ob.bad).sum() > 0
    assert record.dropped_sentinel == (v & ob.bad).sum() > 0
    assert np.allclose(lc[:, 0], np.round(h.t[kept], 5))
    # Fluxes are Sky Patrol's (each camera on its own zero point), to 3 decimals.
    assert np.allclose(lc[:, 1], ob.flux[kept], atol=6e-4, rtol=2e-3)
