"""``train_and_evaluate(config, workdir)``: the sharded train loop.

One step = one jitted function over the whole TrainState (donated) and one global
batch, with explicit in/out shardings. The loop restores the workdir's latest complete
checkpoint (or ``train.resume_step``: later steps are moved aside, see
``train.checkpoint``), logs a progress line and metrics, checkpoints every
``train.ckpt_every`` steps, finishes the step, saves and returns on SIGTERM (status
"preempted") or SIGINT / Ctrl-C (status "interrupted"; ``_StopSignals``), and stops with a
clear error on a non-finite loss (only finite states are ever checkpointed).

Logged every ``train.log_every`` steps (means over the window) to ``metrics.jsonl`` and
TensorBoard: the objective's metrics, ``grad_norm``, ``lr``, ``steps_per_s``,
``examples_per_s``, ``eta_s`` and the data pipelines' ``data/*`` statistics, plus
``eval/*`` every ``train.eval_every`` steps. A multi-process run stops at a common step
on SIGTERM or SIGINT (jax's preemption sync point).

The model, the data iterator and the objective come from factories so that tests and
benchmarks can swap in small stand-ins; the defaults build the real FLAM pieces.
"""

import math
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from flam_jax import paths
from flam_jax.data.pipeline import hook_pool, simulator_config
from flam_jax.data.tokenizers import load_tokenizer
from flam_jax.errors import CheckpointError, ConfigError, NonFiniteLossError
from flam_jax.evals.hook import simulate_mixtures, validation_hook
from flam_jax.models.flam import build_model
from flam_jax.train import sharding as sharding_lib
from flam_jax.train.checkpoint import Checkpointer
from flam_jax.train.compile_cache import CacheEvents
from flam_jax.train.data import pipeline_batches, tokenizer_path, uses_global, uses_sed
from flam_jax.train.init import plan_initial_weights
from flam_jax.train.metrics import MetricWriter, Progress
from flam_jax.train.objective import make_objective
from flam_jax.train.optim import make_optimizer
from flam_jax.train.state import ModelDef, TrainState

ModelFactory = Callable[..., nnx.Module]  # (config, rngs) -> module
DataFactory = Callable[..., Any]  # (config, mesh) -> iterator of host-local batches
ObjectiveFactory = Callable[..., Callable]  # (config, mesh) -> objective(model, batch)
EvalFn = Callable[..., dict]  # (model, step) -> {name: float}

INIT_REPORT = "init_report.json"  # WORKDIR/: what a fresh run took from train.init_from


def default_model_factory(config, rngs: nnx.Rngs) -> nnx.Module:
    return build_model(config.model, rngs=rngs)


def default_objective_factory(config, mesh):
    return make_objective(config, mesh)


def default_data_factory(config, mesh):
    return pipeline_batches(config, mesh)


def default_eval_fn(config) -> EvalFn:
    """Frame AUROC on ``train.eval_mixtures`` fixed mixtures from ``train.eval_split``."""
    pool = hook_pool(config)
    mixtures = simulate_mixtures(
        pool, config.train.eval_mixtures, seed=config.seed + 1, cfg=simulator_config(config)
    )
    return validation_hook(mixtures, load_tokenizer(tokenizer_path(config), config.model.context_length))


class _StopSignals:
    """SIGTERM and SIGINT → finish the step in flight, save it, stop.

    SIGTERM is the cluster's eviction notice (status "preempted": the job is meant to be
    restarted, so the CLI exits 0); SIGINT is Ctrl-C, or a launcher passing one on (status
    "interrupted", exit 130). A handler only sets a flag that the loop reads after each
    step: no exception can land inside a step or a save. Further Ctrl-C while stopping
    are ignored until the save is complete, with a line saying so; kill -9 is the harder
    stop, and costs at most the save in flight (an unfinished step is ignored on restart).

    Several processes must stop at one step, since the save is collective. SIGTERM reaches
    jax's preemption service (its own C handler), whose coordination service picks the
    step; SIGINT is handed to the same service by re-sending SIGTERM to this process, so a
    Ctrl-C that reaches every process (launchers forward it) or only one stops them all at
    a common step, where one allgather makes them agree that it was an interruption.
    Without that service (``jax_enable_preemption_service`` off) no signal is caught there:
    Ctrl-C stops the run unsaved, as in plain Python.
    """

    def __init__(self):
        self._term = threading.Event()
        self._int = threading.Event()
        self._previous = {}
        self._multi = jax.process_count() > 1
        if threading.current_thread() is not threading.main_thread():
            return  # Python sets signal handlers from the main thread only
        if not self._multi:
            self._install(signal.SIGTERM, self._on_term)
            self._install(signal.SIGINT, self._on_int)
        elif getattr(jax.config, "jax_enable_preemption_service", True):
            self._install(signal.SIGINT, self._on_int)

    def _install(self, signum, handler):
        self._previous[signum] = signal.signal(signum, handler)

    def _on_term(self, signum, frame):
        self._term.set()

    def _on_int(self, signum, frame):
        if self._int.is_set():
            _say(
                "interrupt: already stopping (the step in flight, then its save); wait for it "
                "(kill -9 is safe: an unfinished save is ignored on the next start)"
            )
            return
        self._int.set()
        _say("interrupt: stopping after the current step and saving it (further Ctrl-C are ignored)")
        if self._multi:
            os.kill(os.getpid(), signal.SIGTERM)  # to jax's preemption service: one step for all

    def requested(self, step: int) -> bool:
        if self._multi:
            try:
                return multihost_utils.reached_preemption_sync_point(step)
            except RuntimeError:  # preemption service disabled on this cluster
                return False
        return self._term.is_set() or self._int.is_set()

    def arrived_since(self) -> bool:
        """A signal raised after ``requested`` this step (one process only: several stop only
        where the sync point says)."""
        return not self._multi and (self._term.is_set() or self._int.is_set())

    def status(self) -> str:
        """Why the loop stops: "interrupted" if any process saw SIGINT, else "preempted".
        Every process must call it at the stop step (a collective when there are several)."""
        interrupted = self._int.is_set()
        if self._multi:
            seen = multihost_utils.process_allgather(np.int32(interrupted))
            interrupted = bool(np.asarray(seen).any())
        return "interrupted" if interrupted else "preempted"

    def close(self):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}


def _say(line: str) -> None:
    # From a signal handler: print() could re-enter a stdout buffer the loop is writing.
    os.write(2, (line + "\n").encode())


class Trainer:
    """Everything a run needs, set up once: mesh, model structure, optimiser, step."""

    def __init__(
        self,
        config,
        workdir: str,
        *,
        model_factory: ModelFactory | None = None,
        data_factory: DataFactory | None = None,
        objective_factory: ObjectiveFactory | None = None,
        devices=None,
    ):
        self.config = config
        self.workdir = workdir
        self.mesh = sharding_lib.make_mesh(config.mesh, devices)
        model_factory = model_factory or default_model_factory
        self._build = lambda: model_factory(config, nnx.Rngs(config.seed))
        self.model_def = ModelDef(nnx.eval_shape(self._build))
        self.tx, self.schedule = make_optimizer(
            config.optim, self.model_def.abstract_params(), config.train.steps
        )
        self.abstract_state = jax.eval_shape(self._init_state)
        self.state_shardings = sharding_lib.tree_shardings(self.abstract_state, self.mesh, config.mesh)
        self.objective = (objective_factory or default_objective_factory)(config, self.mesh)
        self.data = (data_factory or default_data_factory)(config, self.mesh)
        self.examples_per_step = config.data.global_batch * uses_global(
            config
        ) + config.data.sed_clips * uses_sed(config)
        self._step_fn = None

    # --- state
    def _init_state(self) -> TrainState:
        params, extra = self.model_def.split(self._build())
        state = TrainState(
            step=jnp.zeros((), jnp.int32), params=params, extra=extra, opt_state=self.tx.init(params)
        )
        # Weak-typed leaves (a scalar Param built from a Python float) would come back
        # strong from the first step and force a second compilation.
        return jax.tree.map(lambda x: jax.lax.convert_element_type(x, x.dtype), state)

    def init_state(self) -> TrainState:
        """Fresh parameters, created directly in their sharded layout (then any pretrained
        weights from ``model.text_weights`` / ``train.init_from`` put in place)."""
        with jax.set_mesh(self.mesh):
            state = jax.jit(self._init_state, out_shardings=self.state_shardings)()
        params, extra = dict(state.params), dict(state.extra)
        shapes = {name: tuple(value.shape) for name, value in {**params, **extra}.items()}
        weights, report = plan_initial_weights(self.config, nnx.eval_shape(self._build), shapes)
        if report is None:
            return state
        print(report.summary(), flush=True)
        if jax.process_index() == 0:
            paths.write_text(paths.join(self.workdir, INIT_REPORT), report.to_json())
        for name, value in weights.items():
            target, shardings = (
                (params, self.state_shardings.params)
                if name in params
                else (extra, self.state_shardings.extra)
            )
            target[name] = jax.device_put(np.asarray(value, target[name].dtype), shardings[name])
        return state.replace(params=params, extra=extra)

    def sharded_abstract_state(self):
        return jax.tree.map(
            lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
            self.abstract_state,
            self.state_shardings,
        )

    # --- step
    def loss(self, params, state: TrainState, batch) -> tuple[jax.Array, tuple[dict, dict]]:
        """The objective the step differentiates, at ``params`` and the rest of ``state``:
        ``(loss, (metrics, updated extra state))``. Also jitted alone by the device check
        (benchmarks/gpu_sections.py), which compares its value across compute dtypes."""
        step_key = jax.random.fold_in(jax.random.key(self.config.seed), state.step)
        # Master weights stay split over 'fsdp'; the forward and backward passes use whole
        # copies, so each device's weight gradients are its own partial sums, reduce-scattered
        # onto the shards. Without this XLA may instead gather the activations of the global
        # batch onto every device (tests/test_train_step.py).
        params = jax.lax.with_sharding_constraint(params, sharding_lib.replicated(self.mesh))
        model = self.model_def.merge(params, state.extra, step_key)
        loss, metrics = self.objective(model, batch)
        _, extra = self.model_def.split(model)
        return loss, (metrics, extra)

    def _train_step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
        def loss_fn(params):
            return self.loss(params, state, batch)

        (loss, (metrics, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            **metrics,
            "grad_norm": optax.tree.norm(grads),
            "lr": self.schedule(state.step // self.config.optim.grad_accum),
        }
        new_state = TrainState(step=state.step + 1, params=params, extra=extra, opt_state=opt_state)
        return new_state, metrics

    def step_fn(self, batch):
        """The jitted step for batches shaped like ``batch`` (built on first use)."""
        if self._step_fn is None:
            batch_shardings = jax.tree.map(lambda x: sharding_lib.batch_sharding(self.mesh, x.ndim), batch)
            self._step_fn = jax.jit(
                self._train_step,
                in_shardings=(self.state_shardings, batch_shardings),
                out_shardings=(self.state_shardings, sharding_lib.replicated(self.mesh)),
                donate_argnums=(0,),
            )
        return self._step_fn

    def next_batch(self):
        """The next host-local batch, as global arrays sharded over the mesh."""
        return sharding_lib.global_batch(next(self.data), self.mesh)

    def model(self, state: TrainState) -> nnx.Module:
        """A live module (for evaluation) from a train state."""
        return self.model_def.merge(state.params, state.extra)


def _resume_step(ckpt: Checkpointer, wanted: int) -> int | None:
    """The step to restore: ``train.resume_step``, or the latest when it is -1 (None: no
    checkpoint, a fresh start)."""
    steps = ckpt.steps()
    if wanted == -1:
        return steps[-1] if steps else None
    if wanted < -1:
        raise ConfigError(f"train.resume_step must be -1 (the latest) or a saved step, got {wanted}")
    if wanted not in steps:
        have = ", ".join(map(str, steps)) if steps else "none"
        raise CheckpointError(
            f"train.resume_step={wanted}: no complete checkpoint of step {wanted} in {ckpt.directory}; "
            f"available steps: {have}"
        )
    return wanted


def _restore(ckpt: Checkpointer, step: int, trainer: Trainer, is_main: bool) -> TrainState:
    logging.info("restoring %s", ckpt.step_dir(step))
    state = ckpt.restore(step, trainer.sharded_abstract_state(), trainer.data)
    # Only after a good restore: a step that fails to load leaves the directory as it was.
    moved, folder = ckpt.supersede(step)
    if moved and is_main:
        print(
            f"resumed from step {step}: later step(s) {', '.join(map(str, moved))} moved to {folder} "
            "(kept, not deleted); drop train.resume_step for later restarts",
            flush=True,
        )
    return state


def _check_finite(history: list[tuple[int, dict]], last_good: int | None) -> None:
    for step, metrics in history:
        loss = float(metrics["loss"])
        if not math.isfinite(loss):
            where = f"step {last_good}" if last_good is not None else "none saved"
            raise NonFiniteLossError(f"loss is {loss} at step {step}; stopped, last good checkpoint: {where}")


def _window_means(history: list[tuple[int, dict]]) -> dict[str, float]:
    keys = history[-1][1].keys()
    return {k: float(np.mean([float(m[k]) for _, m in history])) for k in keys}


def train_and_evaluate(
    config,
    workdir: str,
    *,
    model_factory: ModelFactory | None = None,
    data_factory: DataFactory | None = None,
    objective_factory: ObjectiveFactory | None = None,
    eval_fn: EvalFn | None = None,
    devices=None,
) -> dict:
    """Train until ``train.steps`` (resuming from ``workdir`` if it holds checkpoints).

    ``devices`` defaults to all devices. Returns ``{"status": "done" | "preempted" |
    "interrupted", "step": int, "metrics": {...}}``: "preempted" after SIGTERM, "interrupted"
    after SIGINT, each once the stop step is saved (``_StopSignals``; a signal during the
    last step still ends "done").
    """
    began = time.perf_counter()
    tc = config.train
    is_main = jax.process_index() == 0
    # Opened first so that a bad train.resume_step fails before anything is built.
    ckpt = Checkpointer(paths.join(workdir, "checkpoints"), keep=tc.ckpt_keep, keep_every=tc.ckpt_keep_every)
    trainer = None
    try:
        resume = _resume_step(ckpt, tc.resume_step)
        trainer = Trainer(
            config,
            workdir,
            model_factory=model_factory,
            data_factory=data_factory,
            objective_factory=objective_factory,
            devices=devices,
        )
        if eval_fn is None and tc.eval_every > 0:
            eval_fn = default_eval_fn(config)
        if resume is not None:
            state = _restore(ckpt, resume, trainer, is_main)
        else:
            state = trainer.init_state()
    except BaseException:  # a damaged checkpoint, a bad config, Ctrl-C while starting
        ckpt.close()
        if trainer is not None and hasattr(trainer.data, "close"):
            trainer.data.close()
        raise
    last_saved = resume
    start = int(state.step)
    writer = MetricWriter(workdir)
    progress = Progress(start, tc.steps, trainer.examples_per_step)
    signals = _StopSignals()
    history: list[tuple[int, dict]] = []
    last_metrics: dict[str, float] = {}
    status = "done"
    try:
        with jax.set_mesh(trainer.mesh):
            for step in range(start, tc.steps):
                batch = trainer.next_batch()
                with CacheEvents() as events:  # the first step compiles: was it in the cache?
                    state, metrics = trainer.step_fn(batch)(state, batch)
                    if step == start:
                        jax.block_until_ready(metrics)
                done = step + 1
                if step == start and is_main:
                    print(
                        f"first step {done} done {time.perf_counter() - began:.1f} s after start "
                        f"(compilation cache: {events.hits} hits, {events.misses} misses)",
                        flush=True,
                    )
                history.append((done, metrics))
                # A signal during the last step changes nothing: the run is complete.
                stop = signals.requested(done) and done < tc.steps
                save = stop or done == tc.steps or (tc.ckpt_every > 0 and done % tc.ckpt_every == 0)
                log = done == tc.steps or (tc.log_every > 0 and done % tc.log_every == 0)
                evaluate = eval_fn is not None and tc.eval_every > 0 and done % tc.eval_every == 0
                if not (save or log or evaluate or stop):
                    continue
                history = jax.device_get(history)
                # Checked before any save: a checkpoint never holds a diverged state.
                _check_finite(history, last_saved)
                scalars = _window_means(history)
                history = []
                if evaluate:
                    scalars.update({f"eval/{k}": v for k, v in eval_fn(trainer.model(state), done).items()})
                if log or evaluate:
                    data_stats = trainer.data.pop_stats() if hasattr(trainer.data, "pop_stats") else {}
                    speed = progress.update(done)
                    writer.write(done, {**scalars, **data_stats, **speed})
                    if is_main:
                        print(progress.line(done, scalars, speed), flush=True)
                last_metrics = scalars
                # The step is computed asynchronously and waited for above (device_get): a
                # Ctrl-C during that wait still belongs to this step, not to the next one.
                if not stop and done < tc.steps and signals.arrived_since():
                    stop = save = True
                if save and done != last_saved:
                    ckpt.save(done, state, trainer.data, force=True)
                    last_saved = done
                if stop:
                    status = signals.status()
                    break
        ckpt.wait()
        if status != "done" and is_main:  # said once the save is complete, not when it starts
            print(f"{status}: checkpoint saved at step {last_saved}", flush=True)
    finally:
        writer.close()
        ckpt.close()
        if hasattr(trainer.data, "close"):
            trainer.data.close()
        signals.close()  # last: a Ctrl-C stays harmless until the save is closed
    return {"status": status, "step": int(state.step), "metrics": last_metrics, "time": time.time()}
