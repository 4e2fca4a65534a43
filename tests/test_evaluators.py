"""`config.evals`: the checks of its entries, the per-epoch metrics they log
and what a resumed run may change about them."""

import ml_collections
import numpy as np
import pytest

from astrom3_jax import errors
from astrom3_jax.configs import base, finetune, pretrain
from astrom3_jax.training import checkpoints, evaluators, validate


def test_shipped_configs_are_valid():
    for c in (pretrain.get_config("cpu"), finetune.get_config("all,sub10,cpu")):
        assert evaluators.check(c) == []
    ft = finetune.get_config("all,sub10,cpu")
    assert [n for n, _ in evaluators.entries(ft, "epoch")] == ["val"]
    assert [n for n, _ in evaluators.entries(ft, "end")] == ["calibration", "test"]
    assert evaluators.end_splits(ft) == ["test", "train", "validation"]
    assert evaluators.end_splits(pretrain.get_config("cpu")) == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (base.eval_entry("recall", "validation", "epoch", "val_"), "unknown 'recall'"),
        (base.eval_entry("report", "test", "hourly", ""), "every must be one of"),
        (base.eval_entry("classification", "test", "epoch", ""), "each validation"),
        (base.eval_entry("report", "test", "epoch", ""), "every='end'"),
        (base.eval_entry("report", "test", "end", "", colour=1), "unknown ['colour']"),
        (
            base.eval_entry("report", "test", "end", "", withhold=("radio",)),
            "['radio'] are not modalities",
        ),
        ({"type": "report", "split": "test"}, "missing ['every', 'prefix', 'options']"),
    ],
)
def test_bad_entries_are_named(entry, message):
    c = finetune.get_config("all,sub10,cpu")
    c.evals["extra"] = entry
    found = evaluators.check(c)
    assert len(found) == 1 and found[0].startswith("evals.extra")
    assert message in found[0]
    with pytest.raises(errors.ConfigError, match="evals.extra"):
        validate.check_config(c)


def test_the_old_tuple_form_says_what_to_write():
    old = pretrain.get_config("cpu").to_dict()
    old["evals"] = ("retrieval",)  # a config file written for an older version
    c = ml_collections.ConfigDict(old)
    (found,) = evaluators.check(c)
    assert found.startswith("evals must map a name to {type, split, every")


def test_a_report_needs_a_classifier():
    c = pretrain.get_config("cpu")
    c.evals["test"] = base.eval_entry("report", "test", "end", "test_")
    assert evaluators.check(c) == [
        "evals.test: 'report' needs a classifier (model.task)"
    ]


def test_epoch_metrics_are_prefixed_and_match_a_hand_count():
    c = finetune.get_config("meta,sub10,cpu")
    labels = np.array([0, 0, 1, 1, 2, 2])
    logits = np.zeros((6, c.model.num_classes))
    logits[np.arange(6), [0, 1, 1, 1, 2, 0]] = 1.0  # recalls 1/2, 1, 1/2
    got = evaluators.run_epoch(c, {"logits": logits}, {"label": labels})
    assert set(got) == {"val_balanced_accuracy", "val_macro_f1"}
    assert got["val_balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    # (precision, recall) per class: (1/2, 1/2), (2/3, 1), (1, 1/2)
    f1 = [2 * p * r / (p + r) for p, r in ((0.5, 0.5), (2 / 3, 1), (1, 0.5))]
    assert got["val_macro_f1"] == pytest.approx(np.mean(f1))


def test_a_workdir_may_be_resumed_with_other_evals(tmp_path):
    wd = str(tmp_path / "run")
    c = finetune.get_config("all,sub10,cpu")
    checkpoints.save_or_check_config(wd, c)
    rescored = finetune.get_config("all,sub10,cpu")
    rescored.evals["test_without_spectra"] = base.eval_entry(
        "report", "test", "end", "test_", withhold=("spectra",), files=False
    )
    checkpoints.check_config(wd, rescored)  # what is scored is not what is trained
    retrained = finetune.get_config("all,sub10,cpu")
    retrained.learning_rate *= 2
    with pytest.raises(errors.ConfigError, match="learning_rate"):
        checkpoints.check_config(wd, retrained)
