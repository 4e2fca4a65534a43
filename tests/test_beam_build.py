"""The Beam build (DirectRunner) writes what the process-pool build writes.

Records are compared feature by feature (a tf.train.Example's features are
a protobuf map, serialised in no fixed order), each feature's bytes exactly;
the statistics file and the bad-object report must be equal too.
"""

from __future__ import annotations

import functools
import json
import os

import pytest

from astrom3_jax.data import datasets, normalisation, schema
from tests.helpers.paths import DUMMY
from tests.helpers.records import split_records
from tests.helpers.release import (
    SPLIT_STEMS,
    catalog_row,
    dummy_release_rows,
    extract_dats,
    write_catalog,
)

pytest.importorskip("apache_beam")

# Two worker processes, as a local build on 2 cores would run.
DIRECT = "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"


def _assert_same_build(beam, pool, splits=SPLIT_STEMS):
    for split in splits:
        ours, theirs = (
            split_records(beam.data_dir, split),
            split_records(pool.data_dir, split),
        )
        assert len(ours) == pool.info.splits[split].num_examples > 0
        assert ours == theirs, f"split {split} differs"
    ours, theirs = (normalisation.stats_of_prepared(b.data_dir) for b in (beam, pool))
    # equal to the last bit; `source` names each build's own download folder
    assert ours.mean == theirs.mean and ours.std == theirs.std
    assert datasets.report(beam) == datasets.report(pool)
    left = [f for f in os.listdir(beam.data_dir) if f.startswith("beam_notes")]
    assert not left


def test_release_config_beam_build_equals_pool_build(tmp_path):
    pool = datasets.prepare("full_42", str(tmp_path / "pool"), DUMMY, num_workers=0)
    beam = datasets.prepare(
        "full_42", str(tmp_path / "beam"), DUMMY, beam_pipeline_options=DIRECT
    )
    _assert_same_build(beam, pool)


def _incomplete_catalog(folder, lc_dir):
    """dummy_data's objects as a catalogue: one without a spectrum, one
    without catalogue values, one light curve missing (a bad row), and the
    light-curve numbers of some rows left blank (measured)."""
    extract_dats(lc_dir)
    spec_root = os.path.abspath(os.path.join(DUMMY, "spectra"))
    rows = []
    for split, r in dummy_release_rows():
        rows.append(catalog_row(split, r, lc_dir, spec_root, cat_dir=folder))
    rows[5]["spectrum"] = ""
    rows[6].update(dict.fromkeys(schema.META_COLS, ""))
    rows[7]["lightcurve"] = "missing.dat"
    for row in rows[::3]:
        row.update(amplitude="", period="", lksl_statistic="")
    write_catalog(folder / "catalog.csv", rows)
    return rows


def test_catalog_beam_build_equals_pool_build(tmp_path):
    folder = tmp_path / "table"
    folder.mkdir()
    rows = _incomplete_catalog(folder, tmp_path / "curves")
    options = dict(skip_bad=True, max_bad_fraction=0.5)
    pool = datasets.prepare(
        "catalog", str(tmp_path / "pool"), str(folder), num_workers=0, **options
    )
    beam = datasets.prepare(
        "catalog", str(tmp_path / "beam"), str(folder),
        beam_pipeline_options=DIRECT, **options,
    )  # fmt: skip
    _assert_same_build(beam, pool)
    report = datasets.report(beam)
    (bad,) = [b for v in report["bad_objects"].values() for b in v]
    assert bad["row"] == 7 and bad["id"] == rows[7]["id"]
    assert sum(a["spectra"] for a in report["absent"].values()) == 1
    assert sum(a["metadata"] for a in report["absent"].values()) == 1

    # Strict: the bad row stops the build, named as the pool build names it.
    with pytest.raises(Exception, match=r"row 7 .*missing\.dat") as err:
        datasets.prepare(
            "catalog", str(tmp_path / "strict"), str(folder),
            beam_pipeline_options="runner=DirectRunner",
        )  # fmt: skip
    assert "skip_bad" in str(err.value)


def test_synthetic_beam_build_equals_pool_build(tmp_path, monkeypatch):
    from astrom3_jax.data import synthetic

    tiny = functools.partial(
        synthetic.generate_release, n_objects=60, n_unseen=6, workers=1
    )
    monkeypatch.setattr(synthetic, "generate_release", tiny)
    pool = datasets.prepare("synthetic_sky", str(tmp_path / "pool"), num_workers=0)
    beam = datasets.prepare(
        "synthetic_sky", str(tmp_path / "beam"), beam_pipeline_options=DIRECT
    )
    _assert_same_build(beam, pool, (*SPLIT_STEMS, "unseen"))
    assert (
        json.loads(open(os.path.join(beam.data_dir, "bad_objects.json")).read())[
            "absent"
        ]
        == datasets.report(pool)["absent"]
    )
