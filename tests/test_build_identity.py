"""Builds of complete configs stay what they were before incomplete objects.

The recorded fingerprints (tests/fixtures/build_identity/*.json) stand for
the builds of commit bb7250e, before the builder learnt about absent
modalities; they were re-recorded in this form at a commit whose builds still
had bb7250e's exact digests on the recording machine. A change that alters
what the release configs or synthetic_small store fails here (builds may gain
files, as they gained normalisation.json; the recorded ones must stay).

What is compared, and how exactly:
- every record's ids, names, labels, integer features and the length of
  every float feature: exactly (a digest per split file);
- float features: within a stated tolerance, because the builder's
  preprocessing goes through NumPy's vectorised log/exp, whose last bits
  differ between CPUs (AVX-512 against AVX2 code paths). Each record's
  values of a feature are summarised by two fixed random projections
  p = sum(w * x), w uniform in [-1, 1]; a projection must agree within
  FLOAT_RTOL * sum(|x|) (eight float32 ulps on every value at once, all in
  the same direction), far below what a preprocessing edit changes (one
  value of a 600-value light curve moved by 1% of its scale shows);
- the build's JSON files (dataset_info.json, normalisation statistics, ...):
  equal, numbers within JSON_RTOL (a few float64 ulps); other files byte
  for byte;
- the synthetic survey's raw files: byte for byte (it writes values at a
  precision that is the same on every x86 CPU).

protobuf writes a record's feature map in an order that varies between
processes, so records are compared as their sorted (name, feature) pairs.

Re-record (only for an intended change, and say so in the commit):
ASTROM3_RECORD_BUILDS=1 python -m pytest -q tests/test_build_identity.py
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib

import numpy as np
import pytest

from astrom3_jax.data import datasets
from tests.helpers.paths import DUMMY
from tests.helpers.records import features_of, field

RECORDED = pathlib.Path(__file__).parent / "fixtures" / "build_identity"
RECORD = os.environ.get("ASTROM3_RECORD_BUILDS") == "1"
FLOAT_RTOL = 1e-6
JSON_RTOL = 1e-12
N_PROJ = 2
TINY = dict(n_objects=150, n_unseen=9, workers=1)


def float_values(feature: bytes, dtype: str) -> np.ndarray:
    """The values of a float Feature: a packed float_list (float32) or, as TFDS
    writes float64 tensors, one bytes_list entry of little-endian doubles."""
    if not feature:
        return np.zeros(0)
    _, s, e = field(feature, 0)  # the bytes_list or float_list
    if s == e:
        return np.zeros(0)
    _, vs, ve = field(feature[s:e], 0)  # its packed value field
    fmt = "<f4" if dtype == "float32" else "<f8"
    return np.frombuffer(feature[s:e][vs:ve], fmt).astype(np.float64)


def float_dtypes(data_dir) -> dict[str, str]:
    """{feature name: float dtype} of a build's top-level float tensors."""
    spec = json.loads((pathlib.Path(data_dir) / "features.json").read_text())
    out = {}
    for name, f in spec["featuresDict"]["features"].items():
        dtype = f.get("tensor", {}).get("dtype", "")
        if dtype.startswith("float"):
            out[name] = dtype
    return out


# --------------------------------------------------------------- fingerprint
def _projection_weights(k: int, n: int) -> np.ndarray:
    return 2.0 * np.random.default_rng([20260, k, n]).random(n) - 1.0


def float_summary(x: np.ndarray) -> list[float]:
    """[p_1, ..., p_K, sum |x|] of one record's values of one feature."""
    x = np.where(np.isfinite(x), x, 0.0)
    proj = [float(np.dot(_projection_weights(k, len(x)), x)) for k in range(N_PROJ)]
    return [float(f"{v:.12g}") for v in (*proj, float(np.abs(x).sum()))]


def shard_fingerprint(path, dtypes: dict[str, str]) -> dict:
    """Exact digest of the non-float parts; float summaries per record."""
    from array_record.python import array_record_module

    reader = array_record_module.ArrayRecordReader(str(path))
    records = reader.read_all()
    reader.close()
    h = hashlib.sha256()
    floats = {name: [] for name in dtypes}
    for record in records:
        for key, feature in sorted(features_of(record).items()):
            if key in dtypes:
                x = float_values(feature, dtypes[key])
                floats[key].append(float_summary(x))
                # exact: how many values, and which are not finite
                feature = f"{len(x)}:{np.flatnonzero(~np.isfinite(x)).tolist()}"
                feature = feature.encode()
            k = key.encode()
            h.update(len(k).to_bytes(4, "little") + k)
            h.update(len(feature).to_bytes(8, "little") + feature)
    return {"records": len(records), "exact": h.hexdigest(), "float": floats}


# Added to builds after bb7250e, and naming the build's own path: its
# statistics are checked in test_catalog (stats_of_prepared).
NOT_RECORDED = ("normalisation.json",)


def fingerprint(data_dir) -> dict:
    dtypes = float_dtypes(data_dir)
    out = {}
    for p in sorted(pathlib.Path(data_dir).iterdir()):
        if p.name in NOT_RECORDED:
            continue
        if ".array_record" in p.name:
            out[p.name] = shard_fingerprint(p, dtypes)
        elif p.suffix == ".json":
            out[p.name] = {"json": json.loads(p.read_text())}
        else:
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def differences(ours: dict, recorded: dict) -> list[str]:
    """What differs from a recorded fingerprint, one line per difference."""
    found = []
    for name, want in recorded.items():
        got = ours.get(name)
        if got is None:
            found.append(f"{name}: missing")
        elif isinstance(want, str) or isinstance(got, str):
            if got != want:
                found.append(f"{name}: bytes differ")
        elif "json" in want:
            if not same_json(got.get("json"), want["json"]):
                found.append(f"{name}: differs beyond {JSON_RTOL} in a number")
        else:
            if (got["records"], got["exact"]) != (want["records"], want["exact"]):
                found.append(f"{name}: records or non-float features differ")
            for feat, want_rows in want["float"].items():
                got_rows = got["float"].get(feat, [])
                for i, (g, w) in enumerate(zip(got_rows, want_rows, strict=True)):
                    tol = FLOAT_RTOL * w[-1]
                    pairs = zip(g[:-1], w[:-1], strict=True)
                    if any(abs(a - b) > tol for a, b in pairs):
                        found.append(f"{name} record {i} {feat}: {g} != {w}")
    return found


def same_json(a, b) -> bool:
    """Equal JSON, numbers within JSON_RTOL (statistics in float64)."""
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and abs(a - b) <= JSON_RTOL * max(abs(a), abs(b))
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(same_json, a, b))
    return a == b


def check_build(data_dir, config: str) -> None:
    path = RECORDED / f"{config}.json"
    ours = fingerprint(data_dir)
    if RECORD:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ours, indent=1, sort_keys=True) + "\n")
    found = differences(ours, json.loads(path.read_text()))
    assert not found, "changed since recorded:\n" + "\n".join(found)


def tree_digest(root) -> str:
    root = pathlib.Path(root)
    files = {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------- tests
@pytest.mark.parametrize("config", ["full_42", "sub10_0"])
def test_release_config_build_unchanged(tmp_path, config):
    b = datasets.prepare(config, str(tmp_path), DUMMY, num_workers=0)
    check_build(b.data_dir, config)


def test_synthetic_small_release_and_build_unchanged(tmp_path, monkeypatch):
    from astrom3_jax.data import synthetic
    from astrom3_jax.data.synthetic import release

    raw = release.generate_release(tmp_path / "raw", preset="small", seed=3, **TINY)
    path = RECORDED / "synthetic_small_150_raw.json"
    if RECORD:
        path.write_text(json.dumps({"all_files": tree_digest(raw)}) + "\n")
    assert tree_digest(raw) == json.loads(path.read_text())["all_files"]

    tiny = functools.partial(synthetic.generate_release, **TINY)
    monkeypatch.setattr(synthetic, "generate_release", tiny)
    b = datasets.prepare("synthetic_small", str(tmp_path / "tfds"), num_workers=0)
    check_build(b.data_dir, "synthetic_small_150")


def test_float_summary_sees_a_small_change_and_forgives_cpu_noise():
    """The tolerance is far below a real change and above CPU-level noise."""
    x = np.random.default_rng(0).normal(size=600).astype(np.float32)
    recorded = float_summary(x.astype(np.float64))

    def differs(values) -> bool:
        ours = {"s": {"records": 1, "exact": "", "float": {"f": [values]}}}
        want = {"s": {"records": 1, "exact": "", "float": {"f": [recorded]}}}
        return bool(differences(ours, want))

    # two float32 ulps on every value, all in the same direction: forgiven
    up = (x + 2 * np.spacing(x)).astype(np.float64)
    assert not differs(float_summary(up))
    changed = x.astype(np.float64)
    changed[123] += 0.01 * np.abs(x).mean()  # one value of 600, by 1% of the scale
    assert differs(float_summary(changed))
