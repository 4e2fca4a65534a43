"""The one training loop: pre-training and fine-tuning differ only in a Task.

`train` resumes, initialises or starts from scratch, then runs the epoch loop
(checkpoints, early stopping). Its guarantees (global gradients, exact resume,
stopping on non-finite values, checked saves) are set out in docs/design.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P

from astrom3_jax import errors
from astrom3_jax import models as models_lib
from astrom3_jax.data import pipeline
from astrom3_jax.training import (
    checkpoints,
    evaluation,
    evaluators,
    optim,
    sharding,
)
from astrom3_jax.training import init_from as init_from_lib
from astrom3_jax.training import metrics_writer as metrics_lib
from astrom3_jax.training.outcome import Outcome, epoch_line, say
from astrom3_jax.training.tasks import Task

TIMING_KEYS = ("train_samples_per_s", "epoch_time_s")


# ---------------------------------------------------------------- the steps


def step_rngs(key: jax.Array, step) -> nnx.Rngs:
    """Per-step keys, a function of (key, step) alone (so resume repeats them).

    Dropout keys are folded with the device index; the ProbSparse 'sample'
    key is shared by all devices, as one reference forward pass draws one
    sample per batch.
    """
    key = jax.random.fold_in(key, step)
    dropout = sharding.device_key(jax.random.fold_in(key, 0))
    return nnx.Rngs(dropout=dropout, sample=jax.random.fold_in(key, 1))


def make_train_step(graphdef, tx, mesh, task: Task) -> Callable:
    """jit(shard_map(per-device step)):
    (state, frozen, rest, batch, lr, key) -> (state, metrics).

    The task's loss is already reduced over the mesh, and its gradient is
    taken inside the per-device program, so replicated parameters get the
    global gradient directly. `metrics["nonfinite"]` flags a step whose loss
    or gradient norm is not finite; the update itself is left as it is.
    """

    def per_device(state, frozen, rest, batch, lr, key):
        rngs_key = key

        def loss_fn(params):
            model = nnx.merge(graphdef, params, frozen, rest)
            # Rngs are built inside the traced function: NNX counts draws.
            rngs = step_rngs(rngs_key, state["step"])
            return task.loss_fn(model, batch, rngs, sharding.AXIS)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        updates = jax.tree.map(lambda u: -lr * u, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = {
            "step": state["step"] + 1,
            "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state,
        }
        metrics = {"loss": loss, "grad_norm": grad_norm, **aux}
        metrics["nonfinite"] = jnp.logical_not(finite).astype(jnp.int32)
        return new, metrics

    fn = sharding.data_parallel(
        per_device,
        mesh,
        in_specs=(P(), P(), P(), P(sharding.AXIS), P(), P()),
        out_specs=(P(), P()),
    )
    return jax.jit(fn, donate_argnums=(0,))


# -------------------------------------------------------------------- state


@dataclasses.dataclass
class ModelParts:
    """A model split for the steps: structure, trained and frozen parameters."""

    train_def: nnx.GraphDef
    eval_def: nnx.GraphDef
    params: nnx.State  # parameters that train
    frozen: nnx.State  # parameters that do not (empty unless config.freeze)
    rest: nnx.State  # everything that is not a parameter (e.g. rng counts)


def split_model(model, trainable) -> ModelParts:
    model.train()
    train_def = nnx.split(model, trainable, nnx.Param, ...)[0]
    model.eval()
    eval_def, params, frozen, rest = nnx.split(model, trainable, nnx.Param, ...)
    return ModelParts(train_def, eval_def, params, frozen, rest)


def _all_params(params, frozen):
    return nnx.to_pure_dict(nnx.merge_state(params, frozen))


def _abstract(tree, mesh):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=sharding.replicated(mesh)
        ),
        tree,
    )


# ------------------------------------------------------------------ the loop


class Run:
    """The mutable state of one training run and its epoch loop."""

    def __init__(self, config, workdir, task: Task, mesh, sources, build_fn=None):
        self.config, self.workdir, self.task, self.mesh = config, workdir, task, mesh
        c = config
        common = dict(
            modalities=tuple(c.model.modalities),
            seq_len=c.seq_len,
            shard_index=jax.process_index(),
            shard_count=jax.process_count(),
            cache=c.cache_data,
            cache_memory_fraction=c.get(
                "cache_memory_fraction", pipeline.DEFAULT_CACHE_FRACTION
            ),
        )
        self.train_iter = pipeline.make_train_loader(
            sources["train"],
            batch_size=c.batch_size,
            seed=c.seed,
            worker_count=c.worker_count,
            **common,
        )
        self.val_batches = pipeline.make_eval_batches(
            sources["validation"], batch_size=c.eval_batch_size, **common
        )
        steps = len(sources["train"]) // c.batch_size
        if c.max_steps_per_epoch:
            steps = min(steps, c.max_steps_per_epoch)
        self.steps_per_epoch = steps

        self.model = models_lib.init_model(c.model, seed=c.seed, build_fn=build_fn)
        self.trainable = task.trainable(c)
        self.tx = optim.make_optimizer(c)
        checkpoints.check_can_save(workdir)
        self.manager = checkpoints.make_manager(workdir, keep_best=c.keep_best)
        self.writer = metrics_lib.MetricsWriter(workdir)
        self.writer.write_config(checkpoints.config_to_json(config))
        self.schedule, self.epoch, self.epoch_step = optim.Schedule(), 0, 0
        self.sums, self.count, self.elapsed = {}, 0, 0.0
        self.start_message = self._start()
        self.train_step = make_train_step(self.parts.train_def, self.tx, mesh, task)
        self.eval_step = evaluation.make_predict_step(
            self.parts.eval_def, mesh, task.eval_fn
        )
        self.eval_key = sharding.replicate(models_lib.eval_key(c.seed), mesh)
        self.key = sharding.replicate(jax.random.key(c.seed), mesh)

    # ------------------------------------------------------------ starting
    def _set_parts(self, opt_state=None, step=0):
        parts = split_model(self.model, self.trainable)
        state = {
            "step": jnp.asarray(step, jnp.int32),
            "params": parts.params,
            "opt_state": self.tx.init(parts.params) if opt_state is None else opt_state,
        }
        self.state, parts.frozen, parts.rest = sharding.replicate(
            (state, parts.frozen, parts.rest), self.mesh
        )
        self.parts = parts

    def _start(self) -> str:
        """As big_vision starts: resume from the workdir if it holds a
        checkpoint, else initialise from `config.init_from`, else from scratch."""
        c = self.config
        if self.manager.all_steps():
            step, got = self._restore_newest()
            if step is not None:
                return got
        if c.init_from:
            source, described = init_from_lib.load_source(c)
            try:
                self.task.init_from(self.model, source)
            except ValueError as e:
                raise errors.ConfigError(
                    f"config.init_from={c.init_from!r} does not fit this model: {e}"
                ) from e
            self._set_parts()
            return f"initialised from {described}"
        self._set_parts()
        return "started from scratch"

    def _restore_newest(self):
        self._set_parts()  # shapes and shardings to restore into
        params_abs = _abstract(
            _all_params(self.parts.params, self.parts.frozen), self.mesh
        )
        train_abs = _abstract(
            {"step": self.state["step"], "opt_state": self.state["opt_state"]},
            self.mesh,
        )

        def restore(step):
            return checkpoints.restore(
                self.manager,
                step,
                abstract_params=params_abs,
                abstract_train_state=train_abs,
            )

        step, got = checkpoints.restore_newest_good(self.manager, restore)
        if step is None:
            return None, None
        full = nnx.state(self.model, nnx.Param)
        nnx.replace_by_pure_dict(full, got["params"])
        nnx.update(self.model, full)
        self._set_parts(
            opt_state=got["train"]["opt_state"], step=int(got["train"]["step"])
        )
        meta = got["meta"]
        self.schedule = optim.Schedule.from_json(meta["schedule"])
        self.epoch, self.epoch_step = meta["epoch"], meta["epoch_step"]
        self.sums = meta.get("epoch_sums", {})
        self.count = meta.get("epoch_count", 0)
        self.elapsed = meta.get("epoch_elapsed", 0.0)
        self.train_iter.set_state(meta["data"])
        return step, f"resumed from step {step} (epoch {self.epoch})"

    # ------------------------------------------------------------- saving
    def save(self, metrics=None):
        meta = {
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "schedule": self.schedule.to_json(),
            "data": self.train_iter.get_state(),
            "epoch_sums": self.sums,
            "epoch_count": self.count,
            "epoch_elapsed": self.elapsed,
        }
        step = int(self.state["step"])
        failure = None
        with checkpoints.quiet_orbax_leftovers():
            try:
                checkpoints.save(
                    self.manager,
                    step,
                    params=_all_params(self.state["params"], self.parts.frozen),
                    train_state={
                        "step": self.state["step"],
                        "opt_state": self.state["opt_state"],
                    },
                    meta=meta,
                    metrics=metrics,
                )
                # Surface a failed background write now, not at some later save.
                self.manager.wait_until_finished()
            except errors.NonFiniteError:
                raise
            except Exception as e:
                failure = e
                with contextlib.suppress(Exception):  # free Orbax's writers
                    checkpoints.close_manager(self.manager)
        if failure is not None:
            raise errors.CheckpointSaveError(
                f"saving checkpoint {step} in {self.manager.directory} failed: "
                f"{checkpoints.error_reason(failure)}. Checkpoints already on disk "
                "are intact; fix the problem (disk space, permissions) and start "
                "the same command again to resume."
            ) from failure

    # ------------------------------------------------------------ training
    def _flush(self, pending, bar, t0) -> None:
        """Fetch the pending steps' metrics (one host sync) and add them up."""
        if not pending:
            return
        first_step = int(pending[0][0])
        rows = jax.device_get([m for _, m in pending])
        for i, m in enumerate(rows):
            if int(m.pop("nonfinite")):
                raise errors.NonFiniteError(
                    f"the loss or gradient is not finite at step {first_step + i} "
                    f"(epoch {self.epoch}): loss={float(m['loss'])}, "
                    f"grad_norm={float(m['grad_norm'])}. Nothing was saved after it: "
                    "the newest checkpoint in the workdir is the last good one. "
                    f"Lower the learning rate (now {self.config.learning_rate})."
                )
            for k, v in m.items():
                self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += len(rows)
        bar.update(len(rows))
        rate = len(rows) * self.config.batch_size / max(time.time() - t0, 1e-9)
        bar.set_postfix(loss=f"{float(rows[-1]['loss']):.3f}", samples_s=f"{rate:.0f}")
        pending.clear()

    def train_epoch(self) -> dict:
        """The rest of the current epoch; mid-epoch checkpoints if configured."""
        from tqdm import tqdm

        c = self.config
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.epoch_step,
            desc=f"epoch {self.epoch}",
            disable=not c.progress_bar or jax.process_index() != 0,
            leave=False,
        )
        every_fetch = max(int(c.log_every_steps), 1)
        pending, t_start, t_fetch = [], time.time(), time.time()
        while self.epoch_step < self.steps_per_epoch:
            step = int(self.state["step"])
            lr = optim.learning_rate(c, self.schedule, step, self.steps_per_epoch)
            batch = sharding.shard_batch(next(self.train_iter), self.mesh)
            self.state, metrics = self.train_step(
                self.state,
                self.parts.frozen,
                self.parts.rest,
                batch,
                jnp.float32(lr),
                self.key,
            )
            pending.append((step, metrics))
            self.epoch_step += 1
            if len(pending) >= every_fetch:
                self._flush(pending, bar, t_fetch)
                t_fetch = time.time()
            every = c.checkpoint_every_steps
            if every and (step + 1) % every == 0:
                if self.epoch_step < self.steps_per_epoch:
                    self._flush(pending, bar, t_fetch)
                    self.elapsed += time.time() - t_start
                    t_start = time.time()
                    self.save()
        self._flush(pending, bar, t_fetch)
        bar.close()
        self.elapsed += time.time() - t_start
        n = max(self.count, 1)
        out = {f"train_{k}": v / n for k, v in self.sums.items()}
        out["train_samples_per_s"] = self.count * c.batch_size / max(self.elapsed, 1e-9)
        # The rate the epoch's last step applied (warm-up and plateau included).
        last = max(int(self.state["step"]) - 1, 0)
        out["lr"] = optim.learning_rate(c, self.schedule, last, self.steps_per_epoch)
        self.sums, self.count, self.elapsed = {}, 0, 0.0
        return out

    def evaluate(self, batches, prefix: str) -> tuple[dict, dict]:
        """(metrics of the split, per-row outputs): the one evaluation path
        (evaluation.predict), then the config's per-epoch evaluators."""
        parts = (self.state["params"], self.parts.frozen, self.parts.rest)
        got = evaluation.predict(
            self.eval_step, parts, batches, self.mesh, self.eval_key
        )
        metrics = {f"{prefix}{k}": v for k, v in got.metrics.items() if k != "count"}
        metrics.update(evaluators.run_epoch(self.config, got.outputs, got.columns))
        return metrics, got.outputs

    def run(self) -> Outcome:
        c = self.config
        say(self.start_message)
        done = metrics_lib.read_metrics(self.workdir)
        last = done[-1] if done else {}
        reason = "already_finished"
        self.writer.drop_from_epoch(self.epoch)
        stop = self.schedule.early_stopped(c)
        if stop:
            reason = "early_stopped"
        elif self.epoch >= c.num_epochs:
            reason = "finished"
        if self.epoch >= c.num_epochs or stop:
            say(f"this run has already ended ({reason.replace('_', ' ')})")
            reason = "already_finished"
        try:
            while self.epoch < c.num_epochs and not stop:
                t0 = time.time()
                train_metrics = self.train_epoch()
                train_time = time.time() - t0
                val, _ = self.evaluate(self.val_batches, "val_")
                self._check_finite_validation(val)
                stop = self.schedule.end_of_epoch(c, self.epoch, val["val_loss"])
                row = {"epoch": self.epoch, **train_metrics, **val}
                row.update(lr_scale=self.schedule.lr_scale, epoch_time_s=train_time)
                # Metrics first: a kill between the two redoes this epoch,
                # and drop_from_epoch() then forgets the line written here.
                self.writer.write(int(self.state["step"]), row)
                say(f"epoch {self.epoch}: {epoch_line(row)}")
                self.epoch, self.epoch_step = self.epoch + 1, 0
                best = val[self.task.best_metric]
                self.save(metrics={checkpoints.BEST_METRIC: best})
                last = row  # an epoch counts once its checkpoint is on disk
                reason = "early_stopped" if stop else "finished"
            self.manager.wait_until_finished()
        except errors.UserError as e:
            # Where the run stands, for the summary next to the error; a
            # failure here must not hide the error itself.
            with contextlib.suppress(Exception):
                self.manager.reload()  # a failed save leaves its step list stale
                e.outcome = self._outcome("stopped", last)
            self._close(after_error=True)
            raise
        except BaseException:
            self._close(after_error=True)
            raise
        self._close(after_error=False)
        return self._outcome(reason, last)

    def _close(self, *, after_error: bool) -> None:
        """Close the checkpoint manager and the metrics writer.

        Orbax raises a failed background save again on close; after an error
        that was already reported, that would replace it with a raw OSError.
        """
        try:
            checkpoints.close_manager(self.manager)
        except Exception as e:
            if not after_error:
                raise errors.CheckpointSaveError(
                    f"finishing the checkpoints in {self.manager.directory} "
                    f"failed: {checkpoints.error_reason(e)}"
                ) from e
        finally:
            self.writer.close()

    def _check_finite_validation(self, val: dict) -> None:
        """Stop before a blown-up model is logged, saved or made `best`."""
        bad = {k: v for k, v in val.items() if not math.isfinite(v)}
        if "val_loss" in bad:
            step = int(self.state["step"])
            raise errors.NonFiniteError(
                f"the validation loss is not finite after step {step} (end of "
                f"epoch {self.epoch}): {', '.join(f'{k}={v}' for k, v in bad.items())}"
                ". The parameters blew up although every training loss so far was "
                "finite; nothing was saved for this epoch: the newest checkpoint in "
                f"the workdir is the last good one. Lower the learning rate (now "
                f"{self.config.learning_rate})."
            )

    def _outcome(self, reason, last) -> Outcome:
        best_step = self.manager.best_step()
        rows = metrics_lib.read_metrics(self.workdir)
        best = next((r for r in rows if r.get("step") == best_step), {})
        return Outcome(
            reason=reason,
            last=last,
            best_step=best_step,
            best_metrics=best,
            checkpoint_dir=str(self.manager.directory),
            latest_step=self.manager.latest_step(),
        )


def train(
    config,
    workdir: str,
    task: Task,
    sources: Mapping,
    *,
    build_fn=None,
    before_training: Callable[[], None] | None = None,
) -> Outcome:
    """Train `task` in `workdir` (resuming if it holds a run); see docs/design.md.

    `config` has been checked (runner.run checks it once). `before_training()`
    runs once the config and workdir are accepted, just before the model is
    built (the command lines warn about a slow allocator there).
    """
    sharding.maybe_initialize_distributed(config.distributed)
    if before_training is not None:
        before_training()
    mesh = sharding.make_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    sharding.check_batch_size(config.eval_batch_size, mesh)
    checkpoints.save_or_check_config(workdir, config)
    with jax.set_mesh(mesh):
        run = Run(config, workdir, task, mesh, sources, build_fn)
        return run.run()
