"""load_model, the import/export workdir path, Hub errors and the import CLI."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from absl.testing import flagsaver
from safetensors.numpy import load_file

from astrom3_jax import api, errors
from astrom3_jax.models import weights
from tests import fake_hub

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "reference_weights_small"


def test_workdir_import_load_and_export(tmp_path):
    src = FIXTURES / "all"
    api.import_to_workdir(src, tmp_path / "run")
    model, config = api.load_model(tmp_path / "run")
    io = np.load(src / "io.npz")
    logits = model(
        photometry=io["photometry"],
        photometry_mask=io["photometry_mask"],
        spectra=io["spectra"],
        metadata=io["metadata"],
    )
    err = np.max(np.abs(logits - io["logits"])) / np.max(np.abs(io["logits"]))
    assert err < 1e-5
    emb = model.embed(
        photometry=io["photometry"],
        photometry_mask=io["photometry_mask"],
        spectra=io["spectra"],
        metadata=io["metadata"],
    )
    assert set(emb) == {"photometry", "spectra", "metadata"}
    out = api.export_model(model, config, tmp_path / "exported")
    a, b = (
        load_file(str(src / weights.WEIGHTS_FILE)),
        load_file(str(out / "model.safetensors")),
    )
    for name in a:
        if not name.endswith(".pe"):
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert json.loads((out / "config.json").read_text()) == json.loads(
        (src / "config.json").read_text()
    )


def test_load_model_from_published_folder():
    model, config = api.load_model(FIXTURES / "meta")
    io = np.load(FIXTURES / "meta" / "io.npz")
    np.testing.assert_allclose(
        model(metadata=io["metadata"]), io["logits"], rtol=1e-5, atol=1e-6
    )
    assert config.model.modalities == ("metadata",)


def test_hub_download_error_is_clear(tmp_path, monkeypatch):
    # An endpoint where nothing listens: the machine is offline.
    fake_hub.isolate(monkeypatch, tmp_path, fake_hub.closed_port_url())
    with pytest.raises(ConnectionError, match="AstroMLCore/AstroM3-CLIP"):
        api.load_model("AstroMLCore/AstroM3-CLIP", cache_dir=tmp_path)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        api.load_model(tmp_path)


def test_hub_404_says_the_id_is_wrong(tmp_path, monkeypatch):
    with fake_hub.FakeHub() as server:  # serves no repository: every id is 404
        fake_hub.isolate(monkeypatch, tmp_path, server.url)
        with pytest.raises(FileNotFoundError, match="no Hub model 'someone/no-such'"):
            api.load_model("someone/no-such", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # no empty cache folder left behind


def clip_embeddings(model):
    data = np.load(FIXTURES / "clip" / "io.npz")
    return model.embed(**{k: data[k] for k in INPUTS}), data


INPUTS = ("photometry", "photometry_mask", "spectra", "metadata")


def test_reimport_needs_overwrite_which_replaces_config_and_checkpoints(tmp_path):
    run = tmp_path / "run"
    api.import_to_workdir(FIXTURES / "meta", run)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(api.WorkdirExistsError) as info:
        api.import_to_workdir(FIXTURES / "meta", run)
    assert str(run) in str(info.value) and "already holds a model" in str(info.value)
    assert "--overwrite" in str(info.value) and "overwrite=True" in str(info.value)

    # A source that fails to import leaves the workdir as it was.
    with pytest.raises(FileNotFoundError):
        api.import_to_workdir(tmp_path / "missing", run, overwrite=True)
    assert json.loads((run / "config.json").read_text())["reference_kind"] == "meta"

    api.import_to_workdir(FIXTURES / "clip", run, overwrite=True)
    assert json.loads((run / "config.json").read_text())["reference_kind"] == "clip"
    steps = [p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()]
    assert steps == ["0"]
    assert (run / "notes.txt").read_text() == "mine"
    model, _ = api.load_model(run)
    emb, data = clip_embeddings(model)
    for name, key in [("photometry", "p_emb"), ("spectra", "s_emb")]:
        err = np.max(np.abs(emb[name] - data[key]))
        assert err < 1e-5 * np.max(np.abs(data[key])), name


# ---------------------------------------------------------------- the CLI


def run_cli(**flag_values):
    """main() of the import CLI in-process: the user error it raises, or None.

    The command line (astrom3_jax/cli/__init__.py) prints such an error as one line
    `error: <message>` and exits with status 1; the last test runs it so.
    """
    from absl import flags

    from astrom3_jax import import_weights

    if "source" not in flags.FLAGS:
        import_weights.define_flags()
    values = {"cache_dir": None, "overwrite": False, "source": None, "workdir": None}
    values.update(flag_values)
    with flagsaver.flagsaver(**values):
        try:
            import_weights.main(["import_weights"])
        except errors.UserError as e:
            assert "\n" not in str(e), str(e)  # one line
            return e
    return None


def test_cli_missing_folder(tmp_path):
    missing = tmp_path / "no" / "weights"
    error = run_cli(source=str(missing), workdir=str(tmp_path / "w"))
    assert isinstance(error, FileNotFoundError)
    assert str(missing) in str(error) and "does not exist" in str(error)


def test_cli_offline_hub_id(tmp_path, monkeypatch):
    fake_hub.isolate(monkeypatch, tmp_path, fake_hub.closed_port_url())
    error = run_cli(
        source="AstroMLCore/AstroM3-CLIP",
        workdir=str(tmp_path / "w"),
        cache_dir=str(tmp_path / "cache"),
    )
    assert isinstance(error, ConnectionError)
    assert "AstroMLCore/AstroM3-CLIP" in str(error)
    assert "could not download" in str(error)


def test_cli_existing_workdir_and_overwrite(tmp_path):
    run = tmp_path / "run"
    assert run_cli(source=str(FIXTURES / "meta"), workdir=str(run)) is None
    error = run_cli(source=str(FIXTURES / "meta"), workdir=str(run))
    assert "already holds a model" in str(error) and "--overwrite" in str(error)
    assert (
        run_cli(source=str(FIXTURES / "spectra"), workdir=str(run), overwrite=True)
        is None
    )
    assert json.loads((run / "config.json").read_text())["reference_kind"] == "spectra"


def test_cli_export_from_a_missing_workdir(tmp_path):
    error = run_cli(workdir=str(tmp_path / "none"), export=True, out=str(tmp_path))
    assert "not an astrom3_jax workdir" in str(error)


def test_cli_missing_workdir_flag():
    assert str(run_cli(source=str(FIXTURES / "meta"))) == "--workdir is required"


@pytest.mark.parametrize("case", ["existing workdir", "missing folder"])
def test_cli_process_prints_one_line_and_no_traceback(tmp_path, case):
    run = tmp_path / "run"
    source = FIXTURES / "meta"
    if case == "existing workdir":
        api.import_to_workdir(source, run)
        want = f"error: workdir {run} already holds a model"
    else:
        source = tmp_path / "absent"
        want = f"error: {source} does not exist"
    cmd = [sys.executable, "-m", "astrom3_jax.import_weights"]
    cmd += [f"--source={source}", f"--workdir={run}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(want), done.stderr
