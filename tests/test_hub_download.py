"""Hub downloads through huggingface_hub, against a Hub served on 127.0.0.1.

tests/fake_hub.py serves the small fixtures in the Hub's URL layout;
`HF_ENDPOINT` points at it. These run the real download code: the bytes
that arrive, the requests sent (retries, resumed ranges, tokens), the
shared cache, and the errors for a gated repository and for no network.
"""

import csv
import pathlib
import time

import numpy as np
import pytest

from astrom3_jax import api
from astrom3_jax.data import hub
from astrom3_jax.data.astrom3_tfds import hub_release
from astrom3_jax.models import weights
from tests import fake_hub

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "reference_weights_small"
REPO = "AstroMLCore/AstroM3-CLIP-meta"
FILES = (weights.CONFIG_FILE, weights.WEIGHTS_FILE)


def weight_files(kind="meta") -> dict:
    return {f: (FIXTURES / kind / f).read_bytes() for f in FILES}


@pytest.fixture
def server(monkeypatch, tmp_path):
    with fake_hub.FakeHub() as h:
        h.cache = fake_hub.isolate(monkeypatch, tmp_path, h.url)
        yield h


def assert_same_files(folder, kind="meta"):
    for name, data in weight_files(kind).items():
        assert (pathlib.Path(folder) / name).read_bytes() == data, name


# ------------------------------------------------------------ weights


def test_download_lands_in_the_shared_cache_and_loads(server):
    sha = server.add_repo(REPO, weight_files())
    folder = weights.resolve_source(REPO)
    # huggingface_hub's cache layout, in HF_HUB_CACHE: other tools share it.
    assert folder == server.cache / "models--AstroMLCore--AstroM3-CLIP-meta" / (
        "snapshots/" + sha
    )
    assert_same_files(folder)
    model, config = api.load_model(REPO)
    io = np.load(FIXTURES / "meta" / "io.npz")
    np.testing.assert_allclose(
        model(metadata=io["metadata"]), io["logits"], rtol=1e-5, atol=1e-6
    )
    assert config.reference_kind == "meta"
    assert server.count("GET", weights.WEIGHTS_FILE) == 1

    # Again: from the cache; only the cheap metadata request is sent.
    before = len(server.requests)
    assert weights.resolve_source(REPO) == folder
    assert server.count("GET", weights.WEIGHTS_FILE) == 1
    assert all(r.method == "HEAD" for r in server.requests[before:])


def test_cache_dir_argument_is_the_cache(server, tmp_path):
    server.add_repo(REPO, weight_files())
    folder = weights.resolve_source(REPO, cache_dir=tmp_path / "mine")
    assert folder.is_relative_to(
        tmp_path / "mine" / "models--AstroMLCore--AstroM3-CLIP-meta"
    )
    assert_same_files(folder)
    assert not server.cache.exists()


def test_cache_path_still_tells_the_pre_training_seed(server):
    """init_from recognises published weights by the name in their path."""
    from astrom3_jax.training import init_from

    server.add_repo("AstroMLCore/AstroM3-CLIP-66", weight_files("clip"))
    folder = weights.resolve_source("AstroMLCore/AstroM3-CLIP-66")
    assert init_from.data_of({"imported_from": str(folder)}, "runs/x") == ("hub", 66)


def test_cached_model_loads_offline_without_a_request(server, monkeypatch):
    server.add_repo(REPO, weight_files())
    folder = weights.resolve_source(REPO)
    n = len(server.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights.resolve_source(REPO) == folder
    assert len(server.requests) == n


def test_server_error_on_metadata_is_retried(server):
    server.add_repo(REPO, weight_files())
    server.fail(weights.WEIGHTS_FILE, "500", method="HEAD")
    assert_same_files(weights.resolve_source(REPO))
    assert server.count("HEAD", weights.WEIGHTS_FILE) == 2


def test_server_error_on_transfer_is_retried(server):
    server.add_repo(REPO, weight_files())
    server.fail(weights.WEIGHTS_FILE, "500")
    assert_same_files(weights.resolve_source(REPO))
    assert server.count("GET", weights.WEIGHTS_FILE) == 2


def test_dropped_transfer_resumes_where_it_broke_off(server, monkeypatch):
    from huggingface_hub import constants

    # huggingface_hub keeps what arrived in whole chunks (10 MB by default);
    # smaller ones let a 780 kB file show it.
    chunk = 64 * 1024
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    files = weight_files("photo")
    server.add_repo(REPO, files)
    server.fail(weights.WEIGHTS_FILE, "drop")
    folder = weights.resolve_source(REPO)
    assert_same_files(folder, "photo")
    gets = [
        r
        for r in server.resolve_requests()
        if r.method == "GET" and r.path.endswith(weights.WEIGHTS_FILE)
    ]
    kept = len(files[weights.WEIGHTS_FILE]) // 2 // chunk * chunk
    assert kept > 0
    assert [r.range for r in gets] == [None, f"bytes={kept}-"]


def test_gated_repo_names_the_repo_and_the_token(server, monkeypatch):
    server.add_repo(REPO, weight_files(), token="hf_secret")
    with pytest.raises(PermissionError) as info:
        weights.resolve_source(REPO)
    message = str(info.value)
    assert REPO in message and "gated" in message
    assert "HF_TOKEN" in message and "hf auth login" in message
    assert "\n" not in message
    assert server.count("GET", weights.WEIGHTS_FILE) == 0

    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert_same_files(weights.resolve_source(REPO))
    assert server.resolve_requests()[-1].authorization == "Bearer hf_secret"


def test_private_repo_names_the_repo_and_the_token(server, monkeypatch):
    server.add_repo(REPO, weight_files(), token="hf_secret", private=True)
    with pytest.raises(PermissionError) as info:
        weights.resolve_source(REPO)
    message = str(info.value)
    assert REPO in message and "HTTP 401" in message and "private" in message
    assert "HF_TOKEN" in message and "hf auth login" in message
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert_same_files(weights.resolve_source(REPO))


def test_unknown_repo_says_the_id_is_wrong(server, tmp_path):
    with pytest.raises(FileNotFoundError, match="no Hub model 'someone/no-such'"):
        api.load_model("someone/no-such", cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()  # no empty cache folder left behind


def test_repo_without_weights_file(server):
    server.add_repo(REPO, {weights.CONFIG_FILE: weight_files()[weights.CONFIG_FILE]})
    with pytest.raises(FileNotFoundError, match="has no file 'model.safetensors'"):
        weights.resolve_source(REPO)


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable endpoint"])
def test_offline_fails_in_seconds_with_the_manual_advice(monkeypatch, tmp_path, how):
    if how == "HF_HUB_OFFLINE":
        with fake_hub.FakeHub() as server:
            fake_hub.isolate(monkeypatch, tmp_path, server.url)
            monkeypatch.setenv("HF_HUB_OFFLINE", "1")
            start = time.monotonic()
            with pytest.raises(ConnectionError) as info:
                api.load_model(REPO)
            assert server.requests == []  # not one request sent
    else:
        fake_hub.isolate(monkeypatch, tmp_path, fake_hub.closed_port_url())
        start = time.monotonic()
        with pytest.raises(ConnectionError) as info:
            api.load_model(REPO)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert REPO in message and "could not download" in message
    assert "--local-dir" in message and "pass their folder instead" in message


def test_hub_error_types():
    """Each failure is a UserError of the built-in kind a caller expects."""
    from astrom3_jax import errors

    for cls, base in [
        (hub.HubError, ConnectionError),
        (hub.HubOfflineError, ConnectionError),
        (hub.HubNotFoundError, FileNotFoundError),
        (hub.HubAccessError, PermissionError),
    ]:
        assert issubclass(cls, errors.UserError) and issubclass(cls, base)


# ------------------------------------------------------- the data release

DUMMY = pathlib.Path(__file__).parent.parent / "tfds_builders/astrom3/dummy_data"
DATASET = hub_release.REPO_ID


def dummy_files() -> dict:
    files = {
        p.relative_to(DUMMY).as_posix(): p.read_bytes()
        for p in sorted(DUMMY.rglob("*"))
        if p.is_file()
    }
    files["spectra/EW/listed-by-no-split.fits"] = b"not needed"
    return files


def listed_spectra(subset, seed) -> set:
    out = set()
    for stem in ("train", "val", "test"):
        path = DUMMY / "splits" / subset / str(seed) / f"{stem}.csv"
        with open(path, newline="") as f:
            out |= {
                f"spectra/{r['target']}/{r['spec_filename']}" for r in csv.DictReader(f)
            }
    return out


def test_release_download_fetches_only_what_the_config_reads(server):
    files = dummy_files()
    server.add_repo(DATASET, files, repo_type="dataset")
    spectra = listed_spectra("sub10", 0)
    one = sorted(spectra)[3]
    server.fail(one, "500")  # a server error on a transfer: retried
    server.fail("photometry.zip", "drop")  # a dropped transfer: resumed
    server.fail("@revision", "500")  # the repository info: asked again

    root = hub_release.download("sub10", 0)

    split = {
        f"splits/sub10/0/{n}" for n in ("train.csv", "val.csv", "test.csv", "info.json")
    }
    want = {"photometry.zip"} | split | spectra
    got = {
        r.path.split("/resolve/", 1)[1].split("/", 1)[1]
        for r in server.resolve_requests()
        if r.method == "GET"
    }
    assert got == want
    assert len(spectra) < sum(p.startswith("spectra/") for p in files)
    assert server.count("GET", one) == 2
    assert server.count("GET", "photometry.zip") == 2
    assert (
        server.count("GET", "/api/datasets/AstroMLCore/AstroM3Dataset/revision/main")
        == 2
    )
    assert root.parent.parent == server.cache / "datasets--AstroMLCore--AstroM3Dataset"
    for path in want:
        assert (root / path).read_bytes() == files[path], path
    assert not (root / "splits/full").exists()

    # Again: the cache answers; no file is transferred.
    n = len(server.resolve_requests())
    assert hub_release.download("sub10", 0) == root
    assert not [r for r in server.resolve_requests()[n:] if r.method == "GET"]

    # Offline, the cached release is still found, without a request.
    n = len(server.requests)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        assert hub_release.download("sub10", 0) == root
    assert len(server.requests) == n


def test_hub_build_equals_the_manual_dir_build(server, tmp_path):
    from astrom3_jax.data import datasets

    server.add_repo(DATASET, dummy_files(), repo_type="dataset")
    from_hub = datasets.prepare("sub10_0", str(tmp_path / "hub"), num_workers=0)
    assert server.count("GET", "photometry.zip") == 1  # it did use the Hub
    by_hand = datasets.prepare(
        "sub10_0", str(tmp_path / "manual"), str(DUMMY), num_workers=0
    )
    for split in ("train", "validation", "test"):
        a, b = from_hub.as_data_source(split), by_hand.as_data_source(split)
        assert len(a) == len(b) > 0
        for i in range(len(a)):
            assert a[i].keys() == b[i].keys()
            for key in a[i]:
                np.testing.assert_array_equal(a[i][key], b[i][key], err_msg=key)


def test_gated_release_names_the_repo_and_the_token(server):
    server.add_repo(DATASET, dummy_files(), repo_type="dataset", token="hf_x")
    with pytest.raises(hub_release.ReleaseDownloadError) as info:
        hub_release.download("sub10", 0)
    message = str(info.value)
    assert DATASET in message and "HF_TOKEN" in message
    assert "hf auth login" in message


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable endpoint"])
def test_offline_release_fails_in_seconds(monkeypatch, tmp_path, how):
    endpoint = fake_hub.closed_port_url()
    fake_hub.isolate(monkeypatch, tmp_path, endpoint)
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(hub_release.ReleaseDownloadError) as info:
        hub_release.download("sub10", 0)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert message.startswith("Cannot reach the Hugging Face Hub")
    if how == "HF_HUB_OFFLINE":
        assert "HF_HUB_OFFLINE is set" in message
    else:
        assert endpoint.removeprefix("http://") in message  # host:port refused
    assert "photometry.zip" in message and "splits/sub10/0/" in message
