"""Builds of complete configs stay what they were before incomplete objects.

The digests below were recorded with the code of commit bb7250e, before the
builder learnt about absent modalities. A change that alters what the
release configs or synthetic_small store fails here.

array_record files are compared record by record, and each record as its
sorted (feature name, serialized feature) pairs: protobuf writes the
feature map in an order that varies between processes, so two builds of the
same code differ in file bytes but never in these pairs. The other files of
a build (dataset_info.json, features.json, ...) are compared byte for byte.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib

import pytest

from astrom3_jax.data import datasets

DUMMY = os.path.join(
    os.path.dirname(__file__), "..", "tfds_builders", "astrom3", "dummy_data"
)
RECORDED = {
    "full_42": "32489a8e2f2c046f4cb930a26f75c18a28410dfb54f49f26f21652741b63de6b",
    "sub10_0": "dd8b74ecabda52a70e6433a847534c5f5f4ce034fed60090b9d5d17fc8da6092",
    # synthetic_small with generate_release(n_objects=150, n_unseen=9, workers=1)
    "synthetic_small_150": (
        "1b5163ad88887e5a1e1c30f53b53678d767fecbc6b35abaf9f1e90429a36cdea"
    ),
    # the raw files of generate_release(preset="small", seed=3, n_objects=150,
    # n_unseen=9)
    "raw_small_150_seed3": (
        "f75eb2564f55aa47c0d25aecb4b623d394ce637d23279153846b6e43cfcd2658"
    ),
}
TINY = dict(n_objects=150, n_unseen=9, workers=1)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _field(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, payload start, payload end) of the length-delimited field at pos."""
    tag = buf[pos]
    assert tag & 7 == 2, f"unexpected wire type in tag {tag}"
    n, pos = _varint(buf, pos + 1)
    return tag, pos, pos + n


def canonical(record: bytes) -> bytes:
    """Digest of a tf.train.Example as its sorted (key, Feature bytes) pairs."""
    _, pos, end = _field(record, 0)
    entries = []
    while pos < end:
        _, epos, eend = _field(record, pos)
        pos = eend
        parts = {}
        while epos < eend:
            tag, s, e = _field(record, epos)
            parts[tag] = record[s:e]
            epos = e
        entries.append((parts[0x0A], parts.get(0x12, b"")))
    h = hashlib.sha256()
    for k, v in sorted(entries):
        h.update(len(k).to_bytes(4, "little") + k + len(v).to_bytes(8, "little") + v)
    return h.digest()


def fingerprint(data_dir) -> dict[str, str]:
    from array_record.python import array_record_module

    out = {}
    for p in sorted(pathlib.Path(data_dir).iterdir()):
        if ".array_record" in p.name:
            reader = array_record_module.ArrayRecordReader(str(p))
            h = hashlib.sha256()
            for record in reader.read_all():
                h.update(canonical(record))
            reader.close()
            out[p.name] = h.hexdigest()
        else:
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def tree_digests(root) -> dict[str, str]:
    root = pathlib.Path(root)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def digest(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("config", ["full_42", "sub10_0"])
def test_release_config_build_unchanged(tmp_path, config):
    b = datasets.prepare(config, str(tmp_path), DUMMY, num_workers=0)
    files = fingerprint(b.data_dir)
    assert digest(files) == RECORDED[config], files


def test_synthetic_small_release_and_build_unchanged(tmp_path, monkeypatch):
    from astrom3_jax.data import synthetic
    from astrom3_jax.data.synthetic import release

    raw = release.generate_release(tmp_path / "raw", preset="small", seed=3, **TINY)
    assert digest(tree_digests(raw)) == RECORDED["raw_small_150_seed3"]

    tiny = functools.partial(synthetic.generate_release, **TINY)
    monkeypatch.setattr(synthetic, "generate_release", tiny)
    b = datasets.prepare("synthetic_small", str(tmp_path / "tfds"), num_workers=0)
    files = fingerprint(b.data_dir)
    assert digest(files) == RECORDED["synthetic_small_150"], files
