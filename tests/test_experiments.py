"""The experiment grid: its plan, skipping finished runs, and the results table."""

import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from astrom3_jax import experiments, training
from astrom3_jax.data import datasets


def grid(root, seeds=(42, 0), modes=("meta",), subsets=("full", "sub10")):
    return experiments.Grid(str(root), "cpu", list(seeds), modes, subsets, "train")


def test_plan_lists_every_run_once(tmp_path):
    g = grid(tmp_path)
    plan = g.plan()
    names = [name for _, name, _, _ in plan]
    assert len(names) == len(set(names)) == 2 * (1 + 2 * 2)  # per seed: 1 + 4
    assert [k for k, *_ in plan].count("pretrain") == 2
    assert {s for *_, s, _ in plan} == {"todo"}
    text = g.describe_plan()
    assert "10 runs, 0 done, 10 to run" in text


def test_finished_runs_are_skipped_and_killed_ones_resumed(tmp_path, monkeypatch):
    g = grid(tmp_path, seeds=(42,))
    runs = g.runs
    done, partial = runs[0], runs[1]
    os.makedirs(g.pretrain_dir(42))
    g._mark_done(g.pretrain_dir(42), 12.0)
    os.makedirs(g.run_dir(done))
    g._mark_done(g.run_dir(done), 3.0, {"accuracy": 0.5})
    os.makedirs(g.run_dir(partial))  # killed: a workdir without the marker
    status = {name: s for _, name, s, _ in g.plan()}
    assert status["seed42"] == "done" and status[done.name] == "done"
    assert status[partial.name] == "partial"
    calls = []

    def fake_run(config, workdir):
        if config.model.task == "clip":
            raise AssertionError("a finished pre-training was run again")
        calls.append((config.dataset, config.get("init_from"), workdir))
        return SimpleNamespace(reports={"test": {"accuracy": 0.25}})

    monkeypatch.setattr(training, "run", fake_run)
    g.run_all(log=lambda *_: None)
    ran = [w for _, _, w in calls]
    assert g.run_dir(done) not in ran
    assert ran == [g.run_dir(r) for r in runs[1:]]  # the partial one included
    for dataset, init_from, workdir in calls:
        assert dataset in ("synthetic_small_full_42", "synthetic_small_sub10_42")
        assert (init_from == g.pretrain_dir(42)) == workdir.endswith("clip_seed42")
    # everything is marked done now, so a second pass runs nothing
    calls.clear()
    g.run_all(log=lambda *_: None)
    assert calls == []


def test_summary_matches_a_hand_computation(tmp_path):
    results = {
        ("meta", "sub10", "scratch"): {42: 0.70, 0: 0.60, 66: 0.65},
        ("meta", "sub10", "clip"): {42: 0.80, 0: 0.66, 66: 0.71},
    }
    (row,) = experiments.summarize(results, ("meta",), ("sub10",))
    assert row["scratch"]["mean"] == pytest.approx(65.0)
    want_std = math.sqrt(((70 - 65) ** 2 + (60 - 65) ** 2 + 0) / 3)  # population
    assert row["scratch"]["std"] == pytest.approx(want_std)
    d = [10.0, 6.0, 6.0]  # paired differences (CLIP - scratch), in points
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)  # sample std for the t
    t = mean / (sd / math.sqrt(3))
    assert row["gain"] == pytest.approx(mean)
    # two-sided p of Student's t with 2 degrees of freedom, closed form
    want_p = 1 - abs(t) / math.sqrt(2 + t * t)
    assert row["p_value"] == pytest.approx(want_p, rel=1e-6)
    # identical gains on every seed: the t statistic is undefined, no p-value
    same = {
        ("m", "s", "scratch"): {1: 0.5, 2: 0.6},
        ("m", "s", "clip"): {1: 0.6, 2: 0.7},
    }
    (flat,) = experiments.summarize(same, ("m",), ("s",))
    assert flat["gain"] == pytest.approx(10.0) and flat["p_value"] is None
    md = experiments.to_markdown([row])
    assert "| metadata | sub10 | 65.00 ± 4.08 | 72.33 ± 5.79 | +7.33 |" in md


def test_results_files(tmp_path):
    g = grid(tmp_path, seeds=(42, 0), subsets=("sub10",))
    for r in g.runs:
        os.makedirs(g.run_dir(r))
        acc = 0.5 + 0.1 * r.clip + 0.01 * (r.seed == 0) * (1 + r.clip)
        with open(os.path.join(g.run_dir(r), "eval.json"), "w") as f:
            json.dump({"accuracy": acc}, f)
    rows = experiments.write_results(g)
    assert rows[0]["clip"]["per_seed"] == pytest.approx({"0": 62.0, "42": 60.0})
    for name in ("results.md", "results.json", "results.png"):
        assert os.path.getsize(os.path.join(str(tmp_path), name)) > 0


def test_fine_tuning_data_set_of_a_pre_training():
    assert (
        datasets.with_subset("synthetic_small", "sub10") == "synthetic_small_sub10_42"
    )
    assert datasets.with_subset("full_0", "sub25") == "sub25_0"
    with pytest.raises(ValueError, match="unknown data set config"):
        datasets.with_subset("full_0", "sub33")


def test_incomplete_comparison_plans_two_pre_trainings_per_seed(tmp_path):
    g = experiments.Grid(
        str(tmp_path), "cpu", [42], ("all",), ("sub10",), "train",
        compare="incomplete", modality_dropout=0.3, withhold=("spectra",),
        pretrain_epochs=5,
    )  # fmt: skip
    kinds = [(k, name) for k, name, _, _ in g.plan()]
    assert kinds[:2] == [
        ("pretrain", "complete_seed42"),
        ("pretrain", "incomplete_seed42"),
    ]
    assert {r.arm for r in g.runs} == {"complete", "incomplete"}
    a = experiments.pretrain_config("cpu", 42, "complete", 5)
    b = experiments.pretrain_config("cpu", 42, "incomplete", 5)
    assert (a.dataset, b.dataset) == (
        "synthetic_small_full_42",
        "synthetic_sky_full_42",
    )
    assert a.num_epochs == b.num_epochs == 5
    run = next(r for r in g.runs if r.arm == "incomplete")
    c = experiments.finetune_config("cpu", run, g.init_from(42, run.arm), "", 0.3)
    assert c.dataset == "synthetic_sky_sub10_42" and c.modality_dropout == 0.3
    assert c.init_from == g.pretrain_dir(42, "incomplete")
    # Both arms are scored on the same labelled objects.
    assert (
        c.dataset.replace("sky", "small")
        == experiments.finetune_config(
            "cpu", next(r for r in g.runs if r.arm == "complete"), "", ""
        ).dataset
    )


def test_summary_names_the_compared_arms():
    results = {
        ("all", "sub10", "complete"): {42: 0.5, 0: 0.6},
        ("all", "sub10", "incomplete"): {42: 0.55, 0: 0.6},
    }
    arms = experiments.ARMS["incomplete"]
    (row,) = experiments.summarize(results, ("all",), ("sub10",), arms)
    assert row["gain"] == pytest.approx(2.5)
    md = experiments.to_markdown([row], arms)
    assert "| mode | subset | complete only | + incomplete | gain |" in md


def test_full_survey_grid_reads_the_real_size_releases(tmp_path):
    g = experiments.Grid(
        str(tmp_path), "cpu", [0], ("spectra",), ("sub25",), "train", survey="full"
    )
    run = g.runs[1]
    assert run.arm == "clip"
    c = experiments.finetune_config("cpu", run, g.init_from(0), "", survey="full")
    assert c.dataset == "synthetic_full_sub25_0"
    assert experiments.pretrain_config("cpu", 0, survey="full").dataset == (
        "synthetic_full_full_0"
    )
    assert (
        experiments.dataset_name("cpu", "sub10", 0, "incomplete", "full")
        == "synthetic_bigsky_sub10_0"
    )
    # Nothing measured yet: the estimate is the small survey's, ten times over.
    small = experiments.Grid(
        str(tmp_path / "s"), "cpu", [0], ("spectra",), ("sub25",), "train"
    )
    assert [t for *_, t in g.plan()] == [10 * t for *_, t in small.plan()]
    with pytest.raises(ValueError, match="unknown survey 'huge'"):
        experiments.Grid(str(tmp_path), "cpu", [0], (), (), "train", survey="huge")


def test_results_only_tabulates_finished_runs_and_trains_nothing(tmp_path):
    g = grid(tmp_path, seeds=(42, 0), modes=("meta",), subsets=("sub10",))
    accuracy = {("scratch", 42): 0.60, ("clip", 42): 0.70, ("scratch", 0): 0.50}
    for r in g.runs:
        if (r.arm, r.seed) in accuracy:  # the clip run of seed 0 never ran
            os.makedirs(g.run_dir(r))
            with open(os.path.join(g.run_dir(r), "eval.json"), "w") as f:
                json.dump({"accuracy": accuracy[r.arm, r.seed]}, f)
    args = ["--root", str(tmp_path), "--seeds", "42,0", "--modes", "meta"]
    args += ["--subsets", "sub10,sub25", "--results_only"]
    cmd = [sys.executable, "-m", "astrom3_jax.experiments", *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert not os.path.exists(os.path.join(str(tmp_path), "pretrain"))
    with open(os.path.join(str(tmp_path), "results.json")) as f:
        (row,) = json.load(f)["rows"]  # sub25 has no finished run: no row
    assert (row["subset"], row["scratch"]["mean"]) == ("sub10", pytest.approx(55.0))
    assert row["clip"]["per_seed"] == {"42": pytest.approx(70.0)}
    assert row["paired_seeds"] == [42]
