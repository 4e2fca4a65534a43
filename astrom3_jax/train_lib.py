"""AstroM3 CLIP pre-training: `train_and_evaluate(config, workdir)`.

The train and eval steps are per-device programs (`jax.shard_map` over the
('data',) mesh): each device embeds its rows, the loss all-gathers the
other modality's embeddings and is reduced over the mesh, and the gradient
is taken of that global loss, so replicated parameters get the global
gradient directly (DESIGN.md's gradient trap). Dropout keys are folded with
the device index; the ProbSparse 'sample' key is shared by all devices, as
one reference forward pass draws one sample for the whole batch.

Optimiser (REFERENCE.md section 5): Adam with coupled L2 decay (decay added
to the gradient before the moments), global-norm clipping first; learning
rate = linear warm-up from lr*1e-5, then reduce-on-plateau on the
validation loss stepped once per epoch; early stopping on validation loss;
the best checkpoint is chosen by validation accuracy.

Exact resume: the train state (params, optimizer, step), the schedule and
early-stopping state and the data iterator's state are checkpointed; every
random key is a function of (seed, step), so a run killed at any point and
restarted with the same command repeats exactly what it lost.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.sharding import PartitionSpec as P

from astrom3_jax import checkpoints, host_memory, losses, sharding
from astrom3_jax import metrics_writer as metrics_lib

MODEL_KEYS_EXCLUDED = ("label", "mask")


# ------------------------------------------------------------ optimisation


def make_optimizer(config) -> optax.GradientTransformation:
    """Clip, coupled L2 decay, Adam moments; the learning rate comes later."""
    parts = []
    if config.grad_clip:
        parts.append(optax.clip_by_global_norm(config.grad_clip))
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    parts.append(optax.scale_by_adam(b1=config.beta1, b2=config.beta2, eps=config.eps))
    return optax.chain(*parts)


def warmup_factor(config, step: int, steps_per_epoch: int) -> float:
    """torch LinearLR(start_factor, total_iters=warmup_epochs) as a factor."""
    if config.warmup_epochs <= 0:
        return 1.0
    epochs = step / steps_per_epoch
    if not config.warmup_per_step:
        epochs = float(step // steps_per_epoch)
    frac = min(epochs / config.warmup_epochs, 1.0)
    start = config.warmup_start_factor
    return start + (1.0 - start) * frac


@dataclasses.dataclass
class Schedule:
    """Host-side plateau + early-stopping state (JSON in every checkpoint)."""

    lr_scale: float = 1.0
    plateau_best: float = float("inf")
    plateau_bad: int = 0
    stop_best: float = float("inf")
    stop_bad: int = 0
    best_accuracy: float = -1.0

    def end_of_epoch(self, config, epoch: int, val_loss: float) -> bool:
        """Steps reduce-on-plateau (after warm-up); True when to stop early."""
        if epoch >= config.warmup_epochs:  # torch: warm-up steps, then plateau
            if val_loss < self.plateau_best * (1.0 - config.plateau_threshold):
                self.plateau_best, self.plateau_bad = val_loss, 0
            else:
                self.plateau_bad += 1
            if self.plateau_bad > config.plateau_patience:
                self.lr_scale *= config.plateau_factor
                self.plateau_bad = 0
        if val_loss < self.stop_best:
            self.stop_best, self.stop_bad = val_loss, 0
        else:
            self.stop_bad += 1
        return self.stop_bad >= config.early_stopping_patience

    def to_json(self) -> dict:
        return {k: (None if v == float("inf") else v) for k, v in vars(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> Schedule:
        return cls(**{k: float("inf") if v is None else v for k, v in d.items()})


# ---------------------------------------------------------------- the steps


def model_inputs(batch: Mapping) -> dict:
    return {k: v for k, v in batch.items() if k not in MODEL_KEYS_EXCLUDED}


def _scales(model) -> dict:
    return {pair: model.logit_scale(*pair) for pair in model.pairs}


def step_rngs(key: jax.Array, step) -> nnx.Rngs:
    """Per-step keys: dropout differs per device, the ProbSparse sample not."""
    key = jax.random.fold_in(key, step)
    dropout = sharding.device_key(jax.random.fold_in(key, 0))
    return nnx.Rngs(dropout=dropout, sample=jax.random.fold_in(key, 1))


def make_train_step(graphdef, tx, mesh) -> Callable:
    """jit(shard_map(per-device step)): (state, rest, batch, lr, key) -> ..."""

    def per_device(state, rest, batch, lr, key):
        def loss_fn(params):
            model = nnx.merge(graphdef, params, rest)
            # Rngs are built inside the traced function: NNX counts draws.
            emb = model(model_inputs(batch), rngs=step_rngs(key, state["step"]))
            pair = losses.pair_losses(emb, _scales(model), axis_name=sharding.AXIS)
            return sum(pair.values()), pair

        (loss, pair), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        updates = jax.tree.map(lambda u: -lr * u, updates)
        new = {
            "step": state["step"] + 1,
            "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state,
        }
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        metrics.update({f"loss/{a}-{b}": v for (a, b), v in pair.items()})
        return new, metrics

    fn = sharding.data_parallel(
        per_device,
        mesh,
        in_specs=(P(), P(), P(sharding.AXIS), P(), P()),
        out_specs=(P(), P()),
    )
    return jax.jit(fn, donate_argnums=(0,))


def make_eval_step(graphdef, mesh) -> Callable:
    """(params, rest, batch, key) -> (batch metrics, embeddings)."""

    def per_device(params, rest, batch, key):
        model = nnx.merge(graphdef, params, rest)
        emb = model(model_inputs(batch), rngs=nnx.Rngs(sample=key))
        mask = batch["mask"]
        metrics = losses.clip_metrics(
            emb, _scales(model), axis_name=sharding.AXIS, mask=mask
        )
        metrics["count"] = jax.lax.psum(jnp.sum(mask), sharding.AXIS)
        return metrics, emb

    fn = sharding.data_parallel(
        per_device,
        mesh,
        in_specs=(P(), P(), P(sharding.AXIS), P()),
        out_specs=(P(), P(sharding.AXIS)),
    )
    return jax.jit(fn)


# --------------------------------------------------------------------- data


def _tfds_sources(config) -> dict:
    """Train/validation sources; synthetic data sets are generated if absent."""
    from astrom3_jax.data import datasets

    return datasets.open_sources(
        config.dataset, ("train", "validation"), config.data_dir or None
    )


def make_loaders(config, sources: Mapping, *, batch_size_check=True):
    from astrom3_jax.data import pipeline

    common = dict(
        modalities=tuple(config.model.modalities),
        seq_len=config.seq_len,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        cache=config.cache_data,
    )
    train = pipeline.make_train_loader(
        sources["train"],
        batch_size=config.batch_size,
        seed=config.seed,
        worker_count=config.worker_count,
        **common,
    )
    val = pipeline.make_eval_batches(
        sources["validation"], batch_size=config.eval_batch_size, **common
    )
    return train, val


# --------------------------------------------------------------- evaluation


_full_set_metrics = jax.jit(losses.clip_metrics)


def evaluate(eval_step, params, rest, batches, mesh, key, config) -> dict:
    """Validation metrics: batch means weighted by real rows, and retrieval
    recall over the whole split (masked padding rows dropped)."""
    sums, total, embs = {}, 0.0, []
    for batch in batches:
        m, emb = eval_step(params, rest, sharding.shard_batch(batch, mesh), key)
        m = jax.device_get(m)
        n = float(m.pop("count"))
        total += n
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + float(v) * n
        keep = sharding.to_host(sharding.shard_batch({"m": batch["mask"]}, mesh)["m"])
        embs.append({k: sharding.to_host(v)[keep > 0] for k, v in emb.items()})
    out = {f"val_{k}": v / max(total, 1.0) for k, v in sums.items()}
    n_all = sum(len(next(iter(e.values()))) for e in embs)
    if embs and n_all <= config.full_retrieval_max:
        full = {k: np.concatenate([e[k] for e in embs]) for k in embs[0]}
        # Retrieval ranks do not depend on the temperature: use scale 1.
        pairs = [
            (a, b)
            for i, a in enumerate(config.model.modalities)
            for b in config.model.modalities[i + 1 :]
        ]
        m = _full_set_metrics(full, {p: jnp.float32(1.0) for p in pairs})
        out.update({f"val_full_{k}": float(v) for k, v in m.items() if "recall" in k})
    return out


# -------------------------------------------------------------------- state


def init_state(model, tx) -> tuple:
    """(graphdef, train state dict, non-Param model state)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": tx.init(params),
    }
    return graphdef, state, rest


def _mode_graphdef(model, train: bool):
    model.train() if train else model.eval()
    return nnx.graphdef(model)


def _restore_into(manager, step, state, mesh) -> tuple[dict, dict]:
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=sharding.replicated(mesh)
        ),
        {"step": state["step"], "opt_state": state["opt_state"]},
    )
    params_abs = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=sharding.replicated(mesh)
        ),
        nnx.to_pure_dict(state["params"]),
    )
    got = checkpoints.restore(
        manager, step, abstract_params=params_abs, abstract_train_state=abstract
    )
    params = state["params"]
    nnx.replace_by_pure_dict(params, got["params"])
    new = {"step": got["train"]["step"], "params": params}
    new["opt_state"] = got["train"]["opt_state"]
    return new, got["meta"]


def _checkpoint_items(state):
    return {
        "params": nnx.to_pure_dict(state["params"]),
        "train_state": {"step": state["step"], "opt_state": state["opt_state"]},
    }


# ------------------------------------------------------------------ the loop


def _warn_if_slow_allocator() -> None:
    """XLA:CPU under glibc malloc re-faults every step's buffers (host_memory)."""
    if jax.default_backend() == "cpu" and host_memory.allocator() == "glibc":
        logging.warning(
            "Training on CPU under glibc malloc: steps run about 1.4x faster "
            "under tcmalloc; %s.",
            host_memory.INSTALL_HINT,
        )


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    sources: Mapping | None = None,
    build_fn: Callable | None = None,
) -> dict:
    """Pre-train (or resume) in `workdir`; returns the last epoch's metrics.

    `sources` ({'train': ..., 'validation': ...} random-access example
    sources) replaces the TFDS data set, and `build_fn(model_config, rngs)`
    the model builder; both are for tests and notebooks.
    """
    sharding.maybe_initialize_distributed(config.distributed)
    _warn_if_slow_allocator()
    mesh = sharding.make_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    sharding.check_batch_size(config.eval_batch_size, mesh)
    checkpoints.save_or_check_config(workdir, config)

    sources = sources if sources is not None else _tfds_sources(config)
    train_iter, val_batches = make_loaders(config, sources)
    steps_per_epoch = len(sources["train"]) // config.batch_size
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)

    with jax.set_mesh(mesh):
        run = _Run(config, workdir, mesh, train_iter, steps_per_epoch, build_fn)
        run.maybe_restore()
        return run.run(val_batches)


class _Run:
    """The mutable state of one training run and its epoch loop."""

    def __init__(self, config, workdir, mesh, train_iter, steps_per_epoch, build_fn):
        self.config, self.mesh, self.workdir = config, mesh, workdir
        self.train_iter, self.steps_per_epoch = train_iter, steps_per_epoch
        model = checkpoints.build_model(config, build_fn, seed=config.seed)
        tx = make_optimizer(config)
        train_def = _mode_graphdef(model, train=True)
        eval_def = _mode_graphdef(model, train=False)
        _, state, rest = init_state(model, tx)
        self.state, self.rest = sharding.replicate((state, rest), mesh)
        self.train_step = make_train_step(train_def, tx, mesh)
        self.eval_step = make_eval_step(eval_def, mesh)
        key = jax.random.key(config.seed)
        self.eval_key = sharding.replicate(jax.random.fold_in(key, 2**31 - 1), mesh)
        self.key = sharding.replicate(key, mesh)
        self.writer = metrics_lib.MetricsWriter(workdir)
        self.manager = checkpoints.make_manager(workdir, keep_best=config.keep_best)
        self.schedule, self.epoch, self.epoch_step = Schedule(), 0, 0

    def maybe_restore(self):
        latest = self.manager.latest_step()
        if latest is not None:
            self.state, meta = _restore_into(
                self.manager, latest, self.state, self.mesh
            )
            self.schedule = Schedule.from_json(meta["schedule"])
            self.epoch, self.epoch_step = meta["epoch"], meta["epoch_step"]
            self.train_iter.set_state(meta["data"])
            logging.info("Resumed from step %d (epoch %d).", latest, self.epoch)
        self.writer.drop_from_epoch(self.epoch)

    def save(self, metrics=None):
        meta = {
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "schedule": self.schedule.to_json(),
            "data": self.train_iter.get_state(),
        }
        items = _checkpoint_items(self.state)
        step = int(self.state["step"])
        checkpoints.save(self.manager, step, **items, meta=meta, metrics=metrics)

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
        sums, n, t0 = {}, 0, time.time()
        while self.epoch_step < self.steps_per_epoch:
            step = int(self.state["step"])
            lr = c.learning_rate * self.schedule.lr_scale
            lr *= warmup_factor(c, step, self.steps_per_epoch)
            batch = sharding.shard_batch(next(self.train_iter), self.mesh)
            self.state, metrics = self.train_step(
                self.state, self.rest, batch, jnp.float32(lr), self.key
            )
            metrics = jax.device_get(metrics)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
            self.epoch_step += 1
            rate = n * c.batch_size / (time.time() - t0)
            bar.update(1)
            bar.set_postfix(
                loss=f"{float(metrics['loss']):.3f}", samples_s=f"{rate:.0f}"
            )
            every = c.checkpoint_every_steps
            if every and (step + 1) % every == 0:
                if self.epoch_step < self.steps_per_epoch:
                    self.save()
        bar.close()
        out = {f"train_{k}": v / max(n, 1) for k, v in sums.items()}
        out["train_samples_per_s"] = n * c.batch_size / max(time.time() - t0, 1e-9)
        out["lr"] = c.learning_rate * self.schedule.lr_scale
        return out

    def run(self, val_batches) -> dict:
        c = self.config
        # A finished (or early-stopped) run started again does nothing.
        stop = self.schedule.stop_bad >= c.early_stopping_patience
        done = metrics_lib.read_metrics(self.workdir)
        last = done[-1] if done else {}
        try:
            while self.epoch < c.num_epochs and not stop:
                t0 = time.time()
                train_metrics = self.train_epoch()
                train_time = time.time() - t0
                val = evaluate(
                    self.eval_step,
                    self.state["params"],
                    self.rest,
                    val_batches,
                    self.mesh,
                    self.eval_key,
                    c,
                )
                stop = self.schedule.end_of_epoch(c, self.epoch, val["val_loss"])
                last = {"epoch": self.epoch, **train_metrics, **val}
                last.update(lr_scale=self.schedule.lr_scale, epoch_time_s=train_time)
                # Metrics first: a kill between the two redoes this epoch,
                # and drop_from_epoch() then forgets the line written here.
                self.writer.write(int(self.state["step"]), last)
                if jax.process_index() == 0:
                    print(f"epoch {self.epoch}: {_summary(last)}", flush=True)
                self.epoch, self.epoch_step = self.epoch + 1, 0
                self.save(metrics={checkpoints.BEST_METRIC: val["val_accuracy"]})
            self.manager.wait_until_finished()
        finally:
            self.manager.close()
            self.writer.close()
        return last


def _summary(m: dict) -> str:
    keys = ("train_loss", "val_loss", "val_accuracy", "lr", "train_samples_per_s")
    out = [f"{k}={m[k]:.4g}" for k in keys if k in m]
    out += [f"{k}={v:.3f}" for k, v in m.items() if k.startswith("val_full_recall@1")]
    return ", ".join(out)
