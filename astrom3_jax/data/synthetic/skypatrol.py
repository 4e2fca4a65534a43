"""A synthetic star's whole record written as an ASAS-SN Sky Patrol v1 download.

The release keeps only the database's V light curve; a user who downloads a
star from Sky Patrol gets both bands, every camera on its own zero point,
non-detections written as `>limit` and failed images as rows of 99.990.
These files let the readers and `predict` be tried on that layout with
stars whose truth is known. One row per epoch (the real service lists the
dithered exposures of an epoch one by one).
"""

from __future__ import annotations

import datetime

import numpy as np

from astrom3_jax.data.synthetic.lightcurves import SENTINEL, Observed

HEADER = "HJD,UT Date,Camera,FWHM,Limit,mag,mag_err,flux(mJy),flux_err,Filter"
JD_UNIX_EPOCH = 2440587.5


def _ut_date(hjd: float) -> str:
    """'2013-08-07.6298761': the UT calendar day and its fraction (HJD taken as JD)."""
    days = hjd - JD_UNIX_EPOCH
    day = np.floor(days)
    date = datetime.date(1970, 1, 1) + datetime.timedelta(days=int(day))
    return f"{date.isoformat()}.{round((days - day) * 1e7):07d}"


def skypatrol_v1_csv(observed: Observed, rng: np.random.Generator) -> bytes:
    """The CSV text of one star's V and g epochs in Sky Patrol v1's layout."""
    h = observed.history
    mag, mag_err = observed.magnitudes(observed.flux)
    fwhm = np.clip(rng.normal(1.9, 0.25, len(h.t)), 1.3, 3.5)
    lines = [HEADER]
    for i in range(len(h.t)):
        head = f"{h.t[i]:.5f},{_ut_date(h.t[i])},{h.camera[i]},{fwhm[i]:.2f}"
        if observed.bad[i]:
            values = ",".join([f"{SENTINEL:.3f}"] * 5)
        else:
            shown = f"{mag[i]:.3f}" if mag[i] < SENTINEL else f">{h.limit[i]:.3f}"
            values = (
                f"{h.limit[i]:.3f},{shown},{mag_err[i]:.3f},"
                f"{observed.flux[i]:.3f},{observed.flux_err[i]:.3f}"
            )
        lines.append(f"{head},{values},{h.band[i]}")
    return ("\n".join(lines) + "\n").encode("ascii")
