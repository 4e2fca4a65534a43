"""Faults in a raw release or in the build machinery: each ends in a clear error
(or a named, skippable bad object), never a hang, a silent reuse or a crash
inside TFDS. Builds that could hang run in a subprocess with a timeout.
"""

import concurrent.futures as cf
import json
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

from astrom3_jax.data import datasets, release_io
from astrom3_jax.data import workers as workers_lib
from astrom3_jax.data.astrom3_tfds import astrom3_dataset_builder as astrom3
from astrom3_jax.data.astrom3_tfds import objects
from astrom3_jax.data.synthetic import release as synthetic_release
from tests import fake_hub
from tests.helpers.paths import DUMMY
from tests.helpers.release import (
    edit_first_train_row,
    examples_by_name,
    prepare_in_process,
    read_csv_rows,
    rewrite_dat,
    write_csv,
)
from tfds_builders import build as build_cli

REPO = pathlib.Path(__file__).resolve().parents[1]
STEMS = ("train", "val", "test")


def _release(tmp_path, n_rows):
    """dummy_data with splits/sub10/0 cut to n_rows objects per split."""
    root = tmp_path / "raw"
    shutil.copytree(DUMMY, root)
    folder = root / "splits" / "sub10" / "0"
    for stem in STEMS:
        path = folder / f"{stem}.csv"
        rows = read_csv_rows(path)
        write_csv(path, list(rows[0]), rows[:n_rows])
    return root, folder


def _drop_spectrum(root, row):
    (root / "spectra" / row["target"] / row["spec_filename"]).unlink()


def _run_python(code, timeout):
    """(returncode, stdout + stderr, seconds) of `python -c code` in the repo."""
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout} s: the build hangs")
    return done.returncode, done.stdout + done.stderr, time.monotonic() - start


def _failed_report(data_dir, config="sub10_0"):
    path = pathlib.Path(data_dir) / "astrom3" / config / astrom3.FAILED_REPORT_NAME
    return path, json.loads(path.read_text())


# ------------------------------------------------- 1. worker failures end it
def test_unreadable_zip_with_workers_fails_naming_it(tmp_path):
    root, _ = _release(tmp_path, 2)
    (root / "photometry.zip").write_bytes(b"this is not a zip archive")
    rc, out, _ = _run_python(
        f"""
        from astrom3_jax.data import datasets
        datasets.prepare("sub10_0", {str(tmp_path / "out")!r}, {str(root)!r},
                         num_workers=2)
        """,
        timeout=120,
    )
    assert rc != 0
    assert f"file {root / 'photometry.zip'}: not a readable zip archive" in out, out


def test_worker_that_dies_ends_the_build(tmp_path):
    # Unpickling the second row calls os._exit in the worker: an abrupt death
    # (like an out-of-memory kill), which a multiprocessing.Pool never reports.
    rc, out, _ = _run_python(
        f"""
        import os
        from astrom3_jax.data import release_io, workers
        from astrom3_jax.data.astrom3_tfds import objects

        class DiesWhenUnpickled(dict):
            def __reduce__(self):
                return (os._exit, (3,))

        folder = os.path.join({DUMMY!r}, "splits", "sub10", "0")
        csv_path = os.path.join(folder, "train.csv")
        files = objects.ReleaseFiles(
            photometry_zip=os.path.join({DUMMY!r}, "photometry.zip"),
            info_json=os.path.join(folder, "info.json"),
            split_csvs={{"train": csv_path}},
            spectra_root=os.path.join({DUMMY!r}, "spectra"),
        )
        ctx = objects.Context(files=files,
                              info=release_io.read_info(files.info_json),
                              csv_path=csv_path)
        rows = release_io.read_split_csv(csv_path)[:3]
        rows[1] = DiesWhenUnpickled(rows[1])
        try:
            list(objects.process_rows(rows, ctx, num_workers=2))
        except workers.WorkerFailure as e:
            print("FAILED:", e)
        """,
        timeout=120,
    )
    assert rc == 0, out
    assert "FAILED: a parsing worker process died" in out, out
    assert "train.csv" in out


def test_worker_initializer_never_raises(tmp_path):
    """A failing initializer made the pool respawn workers forever; its error
    must come back with the worker's first task instead."""
    bad_zip = tmp_path / "photometry.zip"
    bad_zip.write_bytes(b"garbage")
    files = objects.ReleaseFiles(
        photometry_zip=str(bad_zip), info_json="", split_csvs={}, spectra_root=""
    )
    ctx = objects.Context(files=files, info={}, csv_path="train.csv")
    try:
        workers_lib._init_worker(objects._open_worker, (ctx,))  # must not raise
        with pytest.raises(release_io.ReleaseError, match="not a readable zip") as e:
            workers_lib._run_chunk(objects._work_one, [{"name": "x"}])
        assert str(bad_zip) in str(e.value)
    finally:
        workers_lib._STATE.clear()


# ---------------------------------------------------- 2. bound on --skip_bad
def test_allowed_bad_is_floor_of_fraction():
    assert astrom3.allowed_bad(20, 0.05) == 1
    assert astrom3.allowed_bad(19, 0.05) == 0
    assert astrom3.allowed_bad(17063, 0.05) == 853
    assert astrom3.allowed_bad(5, 0.4) == 2  # exact product, not 1.9999
    assert astrom3.allowed_bad(7, 1.0) == 7


def test_skip_bad_fails_beyond_max_bad_fraction(tmp_path):
    root, folder = _release(tmp_path, 5)
    train = read_csv_rows(folder / "train.csv")
    for row in train[:2]:
        _drop_spectrum(root, row)

    with pytest.raises(astrom3.BuildError) as err:
        prepare_in_process(
            "sub10_0", tmp_path / "a", root, skip_bad=True, max_bad_fraction=0.2
        )
    report_path, report = _failed_report(tmp_path / "a")
    first = str(err.value).splitlines()[0]
    assert first == (
        "split train of astrom3/sub10_0: 2 of 5 objects are bad (40.0%), "
        "more than max_bad_fraction=0.2 allows (1)."
    )
    assert str(report_path) in str(err.value)
    # Both bad objects are listed although the limit was passed at the second.
    assert [b["name"] for b in report["bad_objects"]["train"]] == [
        r["name"] for r in train[:2]
    ]
    assert report["complete"] is False and report["skipped"] == {"train": 2}

    builder = prepare_in_process(
        "sub10_0", tmp_path / "b", root, skip_bad=True, max_bad_fraction=0.4
    )
    assert set(examples_by_name(builder, "train")) == {r["name"] for r in train[2:]}
    assert datasets.report(builder)["max_bad_fraction"] == 0.4


def test_default_max_bad_fraction_and_cli_flag(tmp_path, capsys):
    root, folder = _release(tmp_path, 2)
    _drop_spectrum(root, read_csv_rows(folder / "train.csv")[0])
    args = ["--config", "sub10_0", "--manual_dir", str(root), "--num_workers", "0"]
    with pytest.raises(astrom3.BuildError, match=r"max_bad_fraction=0.05 allows \(0\)"):
        build_cli.main([*args, "--data_dir", str(tmp_path / "a"), "--skip_bad"])
    build_cli.main(
        [*args, "--data_dir", str(tmp_path / "b"), "--skip_bad"]
        + ["--max_bad_fraction", "0.5"]
    )
    out = capsys.readouterr().out
    assert "skipped: {'train': 1, 'validation': 0, 'test': 0}" in out


# ------------------------------------- 3. a looser build is not reused silently
def test_stricter_prepare_refuses_a_skip_bad_build(tmp_path, capsys):
    root, folder = _release(tmp_path, 2)
    row = read_csv_rows(folder / "train.csv")[0]
    spectrum = root / "spectra" / row["target"] / row["spec_filename"]
    saved = spectrum.read_bytes()
    spectrum.unlink()
    data_dir = tmp_path / "data"
    loose = dict(skip_bad=True, max_bad_fraction=0.5)
    builder = prepare_in_process("sub10_0", data_dir, root, **loose)
    assert datasets.report(builder)["skipped"]["train"] == 1

    # As loose as before: reused.
    assert prepare_in_process("sub10_0", data_dir, root, **loose).is_prepared()
    # Stricter: refused, saying how to rebuild.
    for stricter in ({}, dict(skip_bad=True, max_bad_fraction=0.05)):
        with pytest.raises(astrom3.BuildError) as err:
            prepare_in_process("sub10_0", data_dir, root, **stricter)
        msg = str(err.value)
        assert msg.startswith(
            f"astrom3/sub10_0 in {builder.data_dir} was built with skip_bad=True "
            "and left out bad objects (train 1 of 2)"
        ), msg
        assert "overwrite=True" in msg and "--overwrite" in msg
        assert f"delete {builder.data_dir}" in msg

    # --overwrite rebuilds strictly: still bad, then repaired.
    cli = ["--config", "sub10_0", "--data_dir", str(data_dir), "--num_workers", "0"]
    cli += ["--manual_dir", str(root), "--overwrite"]
    with pytest.raises(release_io.ReleaseError, match=row["name"]):
        build_cli.main(cli)
    spectrum.write_bytes(saved)
    build_cli.main(cli)
    rebuilt = datasets.builder("sub10_0", str(data_dir))
    rep = datasets.report(rebuilt)
    assert rep["skip_bad"] is False and rep["written"]["train"] == 2
    assert row["name"] in examples_by_name(rebuilt, "train")


# ------------------------------------------------------ 4. a split all bad
def test_split_with_only_bad_objects_fails_with_report(tmp_path):
    root, folder = _release(tmp_path, 2)
    train = read_csv_rows(folder / "train.csv")
    for row in train:
        _drop_spectrum(root, row)
    with pytest.raises(astrom3.BuildError) as err:
        prepare_in_process(
            "sub10_0", tmp_path / "d", root, skip_bad=True, max_bad_fraction=1
        )
    assert str(err.value).splitlines()[0] == (
        "split train of astrom3/sub10_0: all 2 objects are bad, nothing to write."
    )
    path, report = _failed_report(tmp_path / "d")
    assert str(path) in str(err.value)
    assert [b["name"] for b in report["bad_objects"]["train"]] == [
        r["name"] for r in train
    ]
    assert all(
        "spectrum file not found" in b["problem"]
        for b in report["bad_objects"]["train"]
    )
    assert not datasets.builder("sub10_0", str(tmp_path / "d")).is_prepared()


def test_empty_split_csv_is_an_error_naming_it(tmp_path):
    root, folder = _release(tmp_path, 2)
    path = folder / "val.csv"
    write_csv(path, list(read_csv_rows(path)[0]), [])
    with pytest.raises(release_io.ReleaseError, match="lists no objects") as err:
        prepare_in_process("sub10_0", tmp_path / "d", root, skip_bad=True)
    assert str(path) in str(err.value)


# ---------------------------------------------- 5. .dat without header lines
def test_light_curve_without_header_keeps_every_row(tmp_path):
    root, folder = _release(tmp_path, 2)
    row = read_csv_rows(folder / "train.csv")[0]
    t = 2457000 + np.arange(30) * 1.5
    flux = 5.0 + np.sin(t)
    body = "".join(
        f"{a:.5f} 12.0 0.01 {f:.6f} 0.1\n" for a, f in zip(t, flux, strict=True)
    )
    rewrite_dat(root, row["name"], body)
    builder = prepare_in_process("sub10_0", tmp_path / "d", root)
    stored = examples_by_name(builder, "train")[row["name"]]
    assert stored["photometry"].shape == (30, 3)
    np.testing.assert_allclose(
        stored["raw_time_min"], 2457000.0, rtol=0, atol=1e-9
    )  # the first row is kept
    np.testing.assert_allclose(stored["raw_flux_mean"], np.mean(np.round(flux, 6)))


# ------------------------------------------------ 6. one object, two splits
@pytest.mark.parametrize("skip_bad", [False, True])
def test_object_in_two_splits_is_an_error(tmp_path, skip_bad):
    root, folder = _release(tmp_path, 2)
    leaked = read_csv_rows(folder / "train.csv")[1]
    test_rows = read_csv_rows(folder / "test.csv")
    write_csv(folder / "test.csv", list(leaked), [*test_rows, leaked])
    with pytest.raises(release_io.ReleaseError) as err:
        prepare_in_process("sub10_0", tmp_path / "d", root, skip_bad=skip_bad)
    msg = str(err.value)
    assert msg == (
        f"object {leaked['name']}, file {folder / 'test.csv'}: object listed in "
        f"two splits: train ({folder / 'train.csv'}) and test; each object must "
        "be in one split once (a repeat leaks between train, validation and test)"
    )


# ------------------------------------------------- 7. corrupt zip members
def _corrupt_member(root, name, compression):
    """Rewrites one member with `compression`, then flips a byte of its data."""
    path = root / "photometry.zip"
    member = f"vardb_files/{name}.dat"
    with zipfile.ZipFile(path) as z:
        text = z.read(member)
    rewrite_dat(root, name, None)
    with zipfile.ZipFile(path, "a", compression) as z:
        z.writestr(member, text)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 40] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "compression,num_workers,problem",
    [
        (zipfile.ZIP_DEFLATED, 0, "corrupt zip member (error: Error -3"),
        (zipfile.ZIP_DEFLATED, 2, "corrupt zip member (error: Error -3"),
        (zipfile.ZIP_STORED, 0, "corrupt zip member (BadZipFile: Bad CRC-32"),
    ],
)
def test_corrupt_zip_member_is_a_named_bad_object(
    tmp_path, compression, num_workers, problem
):
    root, folder = _release(tmp_path, 2)
    row = read_csv_rows(folder / "train.csv")[0]
    _corrupt_member(root, row["name"], compression)
    where = f"{root / 'photometry.zip'}:vardb_files/{row['name']}.dat"
    kw = dict(num_workers=num_workers)
    with pytest.raises(release_io.ReleaseError) as err:
        datasets.prepare("sub10_0", str(tmp_path / "a"), str(root), **kw)
    assert str(err.value).startswith(
        f"object {row['name']} ({row['id']}), file {where}: {problem}"
    ), str(err.value)
    builder = datasets.prepare(
        "sub10_0",
        str(tmp_path / "b"),
        str(root),
        skip_bad=True,
        max_bad_fraction=0.5,
        **kw,
    )
    (bad,) = datasets.report(builder)["bad_objects"]["train"]
    assert bad["name"] == row["name"] and bad["file"] == where
    assert bad["problem"].startswith(problem)


# ---------------------------------------------- 8. blank catalogue cells
def test_blank_catalogue_cell_is_a_named_bad_object(tmp_path):
    root, folder = _release(tmp_path, 2)
    row, other = read_csv_rows(folder / "train.csv")
    edit_first_train_row(folder, ruwe="")
    with pytest.raises(release_io.ReleaseError) as err:
        prepare_in_process("sub10_0", tmp_path / "a", root)
    assert str(err.value).startswith(
        f"object {row['name']} ({row['id']}), file {folder / 'train.csv'}: "
        "blank or non-finite catalogue value(s) in ruwe"
    ), str(err.value)
    builder = prepare_in_process(
        "sub10_0", tmp_path / "b", root, skip_bad=True, max_bad_fraction=0.5
    )
    assert set(examples_by_name(builder, "train")) == {other["name"]}
    (bad,) = datasets.report(builder)["bad_objects"]["train"]
    assert bad["name"] == row["name"] and "ruwe" in bad["problem"]


def test_read_split_csv_reads_blank_as_nan_and_rejects_text(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("id,name,target,spec_filename,ruwe\na,n1,EW,f,\nb,n2,EW,f,1.5\n")
    rows = release_io.read_split_csv(path, ("ruwe",))
    assert np.isnan(rows[0]["ruwe"]) and rows[1]["ruwe"] == 1.5
    path.write_text("id,name,target,spec_filename,ruwe\na,n1,EW,f,abc\n")
    with pytest.raises(release_io.ReleaseError, match="'abc' \\(CSV line 2\\)"):
        release_io.read_split_csv(path, ("ruwe",))


# ------------------------------------------------------ 9. offline builds
@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable endpoint"])
def test_offline_hub_build_fails_fast_with_manual_dir_advice(
    tmp_path, monkeypatch, how
):
    # No address outside this machine is contacted: HF_HUB_OFFLINE sends no
    # request, and the endpoint is a port on 127.0.0.1 where nothing listens.
    fake_hub.isolate(monkeypatch, tmp_path, fake_hub.closed_port_url())
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, out, seconds = _run_python(
        f"""
        from astrom3_jax.data import datasets
        datasets.prepare("sub10_0", {str(tmp_path / "d")!r})
        """,
        timeout=90,
    )
    assert rc != 0
    assert "BuildError: Cannot reach the Hugging Face Hub" in out, out[-3000:]
    assert "--manual_dir DIR" in out
    assert seconds < 20, f"took {seconds:.1f} s"
    assert not (tmp_path / "d" / "astrom3" / "sub10_0").exists() or not any(
        (tmp_path / "d" / "astrom3" / "sub10_0").rglob("*.array_record*")
    )


# ----------------------------------------- 10. synthetic workers are spawned
def test_synthetic_release_spawns_its_workers(tmp_path, monkeypatch):
    contexts = []

    class RecordingPool(cf.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            context = kwargs.get("mp_context")
            contexts.append(context.get_start_method() if context else None)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(workers_lib.cf, "ProcessPoolExecutor", RecordingPool)
    # Over one chunk of stars (synthetic_release.CHUNK): the pool has two jobs.
    kw = dict(preset="small", seed=3, n_objects=130, n_unseen=6)
    synthetic_release.generate_release(tmp_path / "w2", workers=2, **kw)
    assert contexts == ["spawn"]
    synthetic_release.generate_release(tmp_path / "w1", workers=1, **kw)
    for rel in ("photometry.zip", "splits/full/42/train.csv"):
        assert (tmp_path / "w2" / rel).read_bytes() == (
            tmp_path / "w1" / rel
        ).read_bytes()


# ------------------------------------------ 11. the natural import registers
def test_importing_tfds_builders_astrom3_registers_the_builder(tmp_path):
    rc, out, _ = _run_python(
        f"""
        import tensorflow_datasets as tfds
        import tfds_builders.astrom3
        for name in ("astrom3/full_42", "astrom3/synthetic_small_sub10_0"):
            b = tfds.builder(name, data_dir={str(tmp_path)!r})
            print(type(b).__module__, b.builder_config.name)
        """,
        timeout=120,
    )
    assert rc == 0, out
    module = "astrom3_jax.data.astrom3_tfds.astrom3_dataset_builder"
    assert f"{module} full_42\n{module} synthetic_small_sub10_0\n" in out
