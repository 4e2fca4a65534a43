"""Builds of complete configs stay what they were before incomplete objects.

The digests below were recorded with the code of commit bb7250e, before the
builder learnt about absent modalities. A change that alters what the
release configs or synthetic_small store fails here (builds may gain files,
as they gained normalisation.json; the recorded ones must stay the same).

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
# Per file of each build: files added to builds later (normalisation.json)
# are not compared; a file recorded here must stay the same.
RECORDED_BUILDS = {
    "full_42": {
        "LICENSE": ("c46701fbec1318d7fce249ac24b8cbf1fb6a1b17225e75bd9e71020fcad2e0bd"),
        "astrom3-test.array_record-00000-of-00001": (
            "93231879b939125398f9569e7172f502292576a05a87f17fb652a509fff5d503"
        ),
        "astrom3-train.array_record-00000-of-00001": (
            "de63209f398ab24f5bdb7d0677baf97428016946f2bb1904e55ce15f330aaa0c"
        ),
        "astrom3-validation.array_record-00000-of-00001": (
            "97268ba7e03db14c2fb3a755f75a3ea84fdf52a405e63e6bdcb43e1cba644dbb"
        ),
        "bad_objects.json": (
            "626af803f600de3a04fc7daa2b61e960a9a69aaa576d66340045c0c2e9562506"
        ),
        "dataset_info.json": (
            "c0f2b00476674fd256d0b73eeb3e1b3aad4952fb07dbc5d28a27890dcfe0cbb3"
        ),
        "features.json": (
            "6a8b34c874b880d829b9bf95b8b4a94e5e48fae1cdf7065072bbd4659af12cfc"
        ),
        "label.labels.txt": (
            "aae9fa9c3d7002a01674f2191c9dd91f16cead580cd296ad898089d739a32614"
        ),
    },
    "sub10_0": {
        "LICENSE": ("c46701fbec1318d7fce249ac24b8cbf1fb6a1b17225e75bd9e71020fcad2e0bd"),
        "astrom3-test.array_record-00000-of-00001": (
            "6cb8b1ce872b0334fa6500e5e61e00233ede8d04bf0b98fdf3a84009ee104c49"
        ),
        "astrom3-train.array_record-00000-of-00001": (
            "bf1d2d1b709ddc95b9b51c11229397d77c5d365a1a5fd36e9ff9aca2ba9e5af0"
        ),
        "astrom3-validation.array_record-00000-of-00001": (
            "78010286bdb2acc825ea9d2acf4097008efd12961f2c6505f84e875f246d1e0b"
        ),
        "bad_objects.json": (
            "68ee0430233f1be64ba83ca4516cd6ba95a1f4ef36369ae83368a993078c8ea8"
        ),
        "dataset_info.json": (
            "3a7be04e93423bd217a9a90dc5a8976e7d35f3bb012754aface4943fe5f6bb55"
        ),
        "features.json": (
            "6a8b34c874b880d829b9bf95b8b4a94e5e48fae1cdf7065072bbd4659af12cfc"
        ),
        "label.labels.txt": (
            "aae9fa9c3d7002a01674f2191c9dd91f16cead580cd296ad898089d739a32614"
        ),
    },
    "synthetic_small_150": {
        "LICENSE": ("c46701fbec1318d7fce249ac24b8cbf1fb6a1b17225e75bd9e71020fcad2e0bd"),
        "astrom3-test.array_record-00000-of-00001": (
            "3a37eab0cc8171089f89822c92c0973f8bc5e3138b33461ef9111c4ccfe3984b"
        ),
        "astrom3-train.array_record-00000-of-00001": (
            "d8ad2f9127fba9fc89fe6358670b060089761d5013b06e29277cc27009655b9e"
        ),
        "astrom3-unseen.array_record-00000-of-00001": (
            "e8e14ffd989d179784c5f17e2ad3cb0aceccab507e79a3f7c76243b1f37dd406"
        ),
        "astrom3-validation.array_record-00000-of-00001": (
            "a4e39916c4d5c7589368ef1f06af6d47fd7ac6393f7a72ef87e62dc66cdeaeae"
        ),
        "bad_objects.json": (
            "5be770bb62f0a70151de24a68d387822b22909662ad64b853d41734767372455"
        ),
        "dataset_info.json": (
            "a61e8eecddb3107e5d249f37486c91f2c5a15afbb9b681a64dd6179b1aa5caae"
        ),
        "features.json": (
            "8adff02eae7aaf4837a5713640822f4f034c22f9d56ef9c5d75b24786c52fc78"
        ),
        "label.labels.txt": (
            "aae9fa9c3d7002a01674f2191c9dd91f16cead580cd296ad898089d739a32614"
        ),
    },
}
# The raw files of generate_release(preset="small", seed=3, n_objects=150,
# n_unseen=9), all 272 of them in one digest.
RECORDED_RAW_SMALL = "f75eb2564f55aa47c0d25aecb4b623d394ce637d23279153846b6e43cfcd2658"
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


def check_build(data_dir, recorded: dict[str, str]) -> None:
    files = fingerprint(data_dir)
    changed = [f for f in recorded if files.get(f) != recorded[f]]
    assert not changed, f"changed or missing since recorded: {changed}"


@pytest.mark.parametrize("config", ["full_42", "sub10_0"])
def test_release_config_build_unchanged(tmp_path, config):
    b = datasets.prepare(config, str(tmp_path), DUMMY, num_workers=0)
    check_build(b.data_dir, RECORDED_BUILDS[config])


def test_synthetic_small_release_and_build_unchanged(tmp_path, monkeypatch):
    from astrom3_jax.data import synthetic
    from astrom3_jax.data.synthetic import release

    raw = release.generate_release(tmp_path / "raw", preset="small", seed=3, **TINY)
    assert digest(tree_digests(raw)) == RECORDED_RAW_SMALL

    tiny = functools.partial(synthetic.generate_release, **TINY)
    monkeypatch.setattr(synthetic, "generate_release", tiny)
    b = datasets.prepare("synthetic_small", str(tmp_path / "tfds"), num_workers=0)
    check_build(b.data_dir, RECORDED_BUILDS["synthetic_small_150"])
