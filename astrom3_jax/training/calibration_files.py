"""A classifier's calibration, fitted once training ends and kept with it.

The end-of-run evaluator `calibrate` (evaluators.py) scores the best
checkpoint on the training and validation splits, fits the temperature and
the out-of-distribution statistics (calibration.py) and writes them to the
workdir: calibration.npz (read by `predict`) and calibration.json (what was
fitted and the validation split's NLL and ECE before and after).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from astrom3_jax.data import lightcurve_modes, modalities, normalisation
from astrom3_jax.training import calibration, checkpoints, evaluation
from astrom3_jax.training import workdir as workdir_lib

CALIBRATION_FILE = "calibration.npz"
SUMMARY_FILE = "calibration.json"


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What predict applies: softmax(logits / temperature) and the OOD
    scores (`inputs`: None for a model without light curves, or a
    calibration written before it existed)."""

    temperature: float
    ood: calibration.OutOfDistribution
    inputs: calibration.InputDensity | None = None


def masked_embeddings(got, names) -> dict[str, np.ndarray]:
    """Each modality's embeddings, NaN rows where the object lacks it."""
    outputs = {m: np.asarray(got.outputs[m]) for m in names}
    for m in names:
        flags = got.outputs.get(modalities.presence_key(m))
        if flags is not None:
            outputs[m] = np.where(np.asarray(flags)[:, None] > 0, outputs[m], np.nan)
    return outputs


def split_features(got, names):
    """Head features of every object that has one of the model's
    modalities, their labels and logits."""
    feats, has = calibration.head_features(masked_embeddings(got, names), names)
    labels = np.asarray(got.columns["label"], np.int64)
    return feats[has], labels[has], np.asarray(got.outputs["logits"])[has]


AUX_FIELD = "photometry_aux"


def light_curve_numbers(got, names, second_period=None) -> np.ndarray | None:
    """Each object's calibration.LIGHT_CURVE_NUMBERS row: its photometry_aux
    and `second_period` (second_period_column's; NaN when not given), NaN
    rows where it has no light curve; None when the model reads none."""
    if "photometry" not in names or AUX_FIELD not in got.columns:
        return None
    aux = np.asarray(got.columns[AUX_FIELD], np.float64)
    extra = np.full(len(aux), np.nan) if second_period is None else second_period
    aux = np.column_stack([aux, np.asarray(extra, np.float64)])
    flags = got.outputs.get(modalities.presence_key("photometry"))
    if flags is not None:
        aux = np.where(np.asarray(flags)[:, None] > 0, aux, np.nan)
    return aux


def second_period_column(source, stats) -> np.ndarray | None:
    """lightcurve_modes.second_period_logit of every object of `source`, in
    its order (NaN without a light curve); None without statistics to undo
    the period's normalisation (a run recorded none)."""
    if stats is None:
        return None
    return np.asarray(
        [lightcurve_modes.second_period_logit(source[i], stats)
         for i in range(len(source))],
        np.float64,
    )  # fmt: skip


def workdir_stats(workdir: str):
    """The normalisation statistics recorded with the run, or None."""
    try:
        return normalisation.read_stats(workdir)
    except normalisation.MissingStatsError:
        return None


def calibrate(config, workdir: str, sources, *, build_fn=None) -> dict:
    """Fits and writes the calibration of the best checkpoint; returns the
    summary written to calibration.json."""
    model, _ = workdir_lib.restore_model(workdir, "best", build_fn=build_fn)
    with checkpoints.make_manager(workdir) as manager:
        step = int(checkpoints.resolve_step(manager, "best"))
    predictor = evaluation.Predictor(model, seed=config.seed)
    names = tuple(config.model.modalities)
    got, numbers = {}, {}
    # The light-curve numbers only for a model that reads light curves.
    reads_light_curves = "photometry" in names
    host_fields = ("label",) + ((AUX_FIELD,) if reads_light_curves else ())
    stats = workdir_stats(workdir) if reads_light_curves else None
    for split in ("train", "validation"):
        ran = predictor.run(
            sources[split],
            batch_size=config.eval_batch_size,
            modalities=names,
            seq_len=config.seq_len,
            host_fields=host_fields,
        )
        if jax.process_count() > 1:
            ran.columns = evaluation.index_from_source(sources[split], host_fields)
        got[split] = split_features(ran, names)
        second = second_period_column(sources[split], stats)
        aux = light_curve_numbers(ran, names, second)
        if aux is not None:
            predicted = np.argmax(np.asarray(ran.outputs["logits"]), axis=1)
            labels = np.asarray(ran.columns["label"], np.int64)
            numbers[split] = (aux, labels, predicted)
    (f_train, y_train, _), (f_val, y_val, z_val) = got["train"], got["validation"]
    temperature = calibration.fit_temperature(z_val, y_val)
    ood = calibration.OutOfDistribution.fit(f_train, y_train, config.model.num_classes)
    ood = ood.with_reference(ood.score(f_val))
    inputs = None
    if numbers:
        aux, labels, _ = numbers["train"]
        channels = calibration.INPUT_DENSITY_CHANNELS
        if stats is None:  # no period in days: the three numbers alone
            channels = tuple(
                c for c in channels if c != calibration.SECOND_PERIOD_CHANNEL
            )
        inputs = calibration.InputDensity.fit(
            aux, labels, config.model.num_classes, channels=channels
        )
        aux, _, predicted = numbers["validation"]
        inputs = inputs.with_reference(inputs.score(aux, predicted))
    summary = {
        "step": step,
        "temperature": temperature,
        "fitted_on": "validation",
        "ood_fitted_on": "train",
        "ood_scores": ["head_mahalanobis"]
        + ([] if inputs is None else ["light_curve_numbers"]),
        "light_curve_numbers": []
        if inputs is None
        else [calibration.LIGHT_CURVE_NUMBERS[c] for c in inputs.channels],
        "validation_objects": len(y_val),
        "validation_nll": [
            calibration.nll(z_val, y_val),
            calibration.nll(z_val, y_val, temperature),
        ],
        "validation_ece": [
            calibration.expected_calibration_error(calibration.softmax(z_val), y_val),
            calibration.expected_calibration_error(
                calibration.softmax(z_val, temperature), y_val
            ),
        ],
    }
    if jax.process_index() == 0:
        save(workdir, Calibration(temperature, ood, inputs))
        path = os.path.join(workdir, SUMMARY_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(summary, f, indent=2)
        os.replace(path + ".tmp", path)
    return summary


def save(workdir: str, cal: Calibration) -> str:
    path = os.path.join(workdir, CALIBRATION_FILE)
    with open(path + ".tmp", "wb") as f:
        np.savez(
            f,
            temperature=np.float64(cal.temperature),
            means=cal.ood.means,
            precision=cal.ood.precision,
            reference_scores=cal.ood.reference_scores,
            centre=cal.ood.centre,
            basis=cal.ood.basis,
            **(
                {}
                if cal.inputs is None
                else {
                    "input_means": cal.inputs.means,
                    "input_precisions": cal.inputs.precisions,
                    "input_log_dets": cal.inputs.log_dets,
                    "input_reference_scores": cal.inputs.reference_scores,
                    "input_channels": np.asarray(cal.inputs.channels, np.int64),
                    "input_distance_only": np.bool_(cal.inputs.distance_only),
                }
            ),
        )
    os.replace(path + ".tmp", path)
    return path


def load(workdir: str) -> Calibration | None:
    """The workdir's calibration; None when it has none (a run without the
    `calibrate` evaluator, imported weights)."""
    path = os.path.join(os.fspath(workdir), CALIBRATION_FILE)
    if not os.path.exists(path):
        return None
    with np.load(path) as z:
        inputs = None
        if "input_means" in z:
            inputs = calibration.InputDensity(
                z["input_means"],
                z["input_precisions"],
                z["input_log_dets"],
                z["input_reference_scores"],
                tuple(int(c) for c in z["input_channels"]),
                bool(z["input_distance_only"]) if "input_distance_only" in z else False,
            )
        return Calibration(
            float(z["temperature"]),
            calibration.OutOfDistribution(
                z["means"],
                z["precision"],
                z["reference_scores"],
                *((z["centre"], z["basis"]) if "basis" in z else ()),
            ),
            inputs,
        )
