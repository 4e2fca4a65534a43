"""Catalogue period, amplitude and LKSL derived from light curves, per class.

Synthetic stars of every class (light curves, true and catalogue periods,
catalogue amplitude and LKSL exactly as the synthetic release makes them,
without building a data set) go through
`astrom3_jax.data.lightcurve_features.derive`. Per class: the share of stars
whose derived period is within 1 % of the true period (orbital for
binaries) and of the catalogue period (which has the survey's alias
errors), for derive and for plain Lomb-Scargle (the highest peak of the same
periodogram: no choice among aliases, no doubling); how derive's misses
split (half, double, other); median |difference| of amplitude and LKSL from
the catalogue's; milliseconds per star (wall and CPU; other load on the
machine inflates wall time). Target: >= 90 % within 1 % of the true period
for each of EW, EA, EB, RRAB, RRC, DSCT, HADS, M.

    python benchmarks/derived_features.py                  # 200 a class, ~7 min
    python benchmarks/derived_features.py --per_class=3    # seconds
    python benchmarks/derived_features.py --classes=EA,M --per_class=300
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from astrom3_jax.data import lightcurve_features
from astrom3_jax.data.synthetic import classes, lightcurves, release
from astrom3_jax.data.synthetic.release_files import stream_rng

PERIODIC = ("EW", "EA", "EB", "RRAB", "RRC", "DSCT", "HADS", "M")
TOLERANCE = 0.01


def synthetic_stars(per_class: int, seed: int, names):
    """Stars as the synthetic release simulates them (same random streams as
    a release of these class counts): dicts of the cleaned light curve, true
    class, true and catalogue period, and the catalogue's amplitude/LKSL."""
    counts = {c: per_class if c in names else 0 for c in classes.CLASSES}
    cat = release.build_catalogue(
        "small", seed, mislabel_fraction=0.0, n_unseen=0, counts=counts
    )
    for i, cls in enumerate(cat["true"]):
        star = release._star_dict(cat, i)  # the release's own per-star record
        curve, _ = lightcurves.simulate(cls, star, stream_rng(seed, 100, i))
        t, mag, mag_err, flux, _ = curve
        period = float(cat["cat"]["period"][i])
        good = mag < 50  # the catalogue's good points (summarise)
        yield {
            "cls": str(cls), "t": t[good], "mag": mag[good], "err": mag_err[good],
            "true": 10 ** star["log_p"], "catalogue": period,
            **lightcurves.summarise(t, mag, flux, period),
        }  # fmt: skip


def within(p, ref):
    return abs(p / ref - 1) < TOLERANCE


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per_class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--classes", default=",".join(classes.CLASSES))
    args = parser.parse_args(argv)
    names = [c for c in args.classes.split(",") if c]
    unknown = set(names) - set(classes.CLASSES)
    if unknown:
        parser.error(f"unknown classes {sorted(unknown)}; known: {classes.CLASSES}")
    rows: dict[str, list] = {c: [] for c in names}
    wall = cpu = 0.0
    too_few: dict[str, int] = {}  # generator 2: faint stars, few detections
    start = time.perf_counter()
    for s in synthetic_stars(args.per_class, args.seed, names):
        if len(s["t"]) < lightcurve_features.MIN_POINTS:  # derive refuses
            too_few[s["cls"]] = too_few.get(s["cls"], 0) + 1
            continue
        w0, c0 = time.perf_counter(), time.process_time()
        d = lightcurve_features.derive(s["t"], s["mag"], s["err"])
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        t, y, sig = lightcurve_features._clean(s["t"], s["mag"], s["err"])
        ls = 1 / lightcurve_features._peaks(t, y, sig)[0][0]  # plain LS
        r = d["period"] / s["true"]
        miss = "" if within(r, 1) else "half" if within(r, 0.5) else (
            "double" if within(r, 2) else "other")  # fmt: skip
        rows[s["cls"]].append((
            within(d["period"], s["true"]), within(d["period"], s["catalogue"]),
            within(ls, s["true"]), within(ls, s["catalogue"]), miss,
            abs(d["amplitude"] - s["amplitude"]),
            abs(d["lksl_statistic"] - s["lksl_statistic"]), d["period_power"],
        ))  # fmt: skip
    n_stars = sum(len(v) for v in rows.values())
    took = time.perf_counter() - start
    few = f"< {lightcurve_features.MIN_POINTS} detections: {too_few or 'none'}"
    print(f"{n_stars} synthetic stars (seed {args.seed}) in {took:.0f} s; {few}")
    head = ("class", "n", "true", "cat", "LS true", "LS cat", "half", "double",
            "other", "|dAmp|", "|dLKSL|", "power")  # fmt: skip
    print(("{:6}{:>5}" + "{:>9}" * 10).format(*head))
    reached = []
    for c, v in rows.items():
        if not v:
            continue
        ok = np.array([x[:4] for x in v], float).mean(0) * 100
        miss = [sum(x[4] == k for x in v) for k in ("half", "double", "other")]
        med = np.median([x[5:] for x in v], axis=0)
        print(("{:6}{:>5}" + "{:>8.1f}%" * 4 + "{:>9}" * 3 + "{:>9.4f}" * 3)
              .format(c, len(v), *ok, *miss, *med))  # fmt: skip
        if c in PERIODIC:
            reached.append(f"{c} {'yes' if ok[0] >= 90 else 'no'}")
    print("true/cat: derive within 1 % of the true / catalogue period; LS: plain "
          "Lomb-Scargle; half/double/other: derive's misses (stars)")  # fmt: skip
    print("target >= 90 % of the true period: " + ", ".join(reached))
    print(f"derive: {1000 * wall / n_stars:.1f} ms/star wall, "
          f"{1000 * cpu / n_stars:.1f} ms/star CPU")  # fmt: skip


if __name__ == "__main__":
    main()
