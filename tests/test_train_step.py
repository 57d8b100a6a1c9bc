"""The sharded train step: 8 devices equal 1, compiles once, optimiser groups, NaN stop."""

import os
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

sys.path.insert(0, os.path.dirname(__file__))
import train_standins as st

from flam_jax.train.trainer import NonFiniteLossError, Trainer, train_and_evaluate


def _trainer(config, devices=None):
    return Trainer(
        config,
        "/unused",
        model_factory=st.standin_model_factory,
        data_factory=st.standin_data_factory,
        devices=devices,
    )


def _run(trainer, steps):
    state = trainer.init_state()
    losses = []
    with jax.set_mesh(trainer.mesh):
        for _ in range(steps):
            batch = trainer.next_batch()
            state, metrics = trainer.step_fn(batch)(state, batch)
            losses.append(float(metrics["loss"]))
    return state, losses


def test_eight_devices_match_one_and_the_step_compiles_once():
    config = st.tiny_config(**{"mesh.fsdp": 2})
    sharded = _trainer(config)
    assert dict(sharded.mesh.shape) == {"data": 4, "fsdp": 2}
    # The test is only meaningful if some parameter really is split over 'fsdp'.
    specs = [s.spec for s in jax.tree.leaves(sharded.state_shardings.params)]
    assert PartitionSpec(None, "fsdp") in specs or PartitionSpec("fsdp") in specs
    single = _trainer(st.tiny_config(**{"mesh.fsdp": 1}), devices=jax.devices()[:1])
    state8, losses8 = _run(sharded, 3)
    state1, losses1 = _run(single, 3)
    np.testing.assert_allclose(losses8, losses1, rtol=1e-5, atol=1e-5)
    assert losses8[0] != losses8[1]
    for name, value in state1.params.items():
        np.testing.assert_allclose(
            np.asarray(state8.params[name]), np.asarray(value), atol=1e-5, err_msg=name
        )
    fresh = jax.device_get(single.init_state().params)
    moved = [n for n in state1.params if not np.allclose(state1.params[n], fresh[n])]
    assert len(moved) == len(state1.params)  # every parameter was trained
    # BatchNorm statistics are carried in the state and updated by the step.
    for name, value in state1.extra.items():
        np.testing.assert_allclose(np.asarray(state8.extra[name]), np.asarray(value), atol=1e-5, err_msg=name)
    # Three steps, one executable: the state's layout and dtypes are stable across steps.
    assert sharded.step_fn(None)._cache_size() == 1
    assert int(state8.step) == 3


def test_groups_and_accumulation():
    config = st.tiny_config(
        **{"optim.frozen": r"^token_embed/", "optim.low_lr": r"^audio/", "optim.grad_accum": 2}
    )
    config.optim.low_lr_factor = 0.0  # lr 0: a trained group whose updates must vanish
    trainer = _trainer(config, devices=jax.devices()[:1])
    before = jax.device_get(trainer.init_state().params)
    one, _ = _run(trainer, 1)
    # First of two accumulated batches: no update yet.
    for name, value in jax.device_get(one.params).items():
        assert np.array_equal(before[name], value), name
    two, _ = _run(trainer, 2)
    after = jax.device_get(two.params)
    for name in before:
        changed = not np.array_equal(before[name], after[name])
        assert changed == (not name.startswith(("token_embed/", "audio/"))), name


def test_unmatched_group_regex_is_a_config_error():
    from flam_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="matches no parameter"):
        _trainer(st.tiny_config(**{"optim.frozen": "no_such_layer"}))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    config = st.tiny_config(**{"train.steps": 8, "train.ckpt_every": 2, "train.log_every": 4})

    def poisoned(config, mesh):
        import grain

        def batch(i):
            b = st._host_batch(int(i), config, 0, 1, 0.0)
            if i >= 4:  # the fifth batch (step 5) carries a NaN
                b["global"]["audio"][0, 0] = np.nan
            return b

        return iter(grain.MapDataset.range(100).map(batch).to_iter_dataset())

    with pytest.raises(NonFiniteLossError, match=r"at step 5; .*last good checkpoint: step 4"):
        train_and_evaluate(
            config,
            str(tmp_path),
            model_factory=st.standin_model_factory,
            data_factory=poisoned,
        )
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]


def test_fsdp_step_gathers_weights_not_the_global_batch_of_activations():
    """Regression: with weights split over 'fsdp', XLA formed the weight gradients of the
    text tower by gathering the activations of every text of the global batch onto every
    chip (flam_paper on v5e:16x16: 4.1x the FLOPs per example, 17.1 GiB per chip).
    Compute must run on whole weights and each device's own examples."""
    import re

    from flam_jax.config import load_experiment, validate
    from flam_jax.models.configs import TEXT_CONFIGS
    from flam_jax.train import aot

    c = load_experiment(os.path.join(os.path.dirname(__file__), "..", "experiments", "cpu_demo.py:tiny"))
    c.model.text_weights = ""
    c.mesh.data, c.mesh.fsdp, c.mesh.shard_min_size = 2, 4, 1024
    c.data.sed_clips, c.data.global_batch, c.data.sed_groups = 16, 16, 0
    trainer = Trainer(validate(c), "/unused", data_factory=lambda config, mesh: None)
    specs = {s.spec for s in jax.tree.leaves(trainer.state_shardings.params)}
    assert any("fsdp" in (axis or ()) for spec in specs for axis in spec)  # FSDP really on
    batch = aot.abstract_batch(c, trainer.mesh, samples=48000)
    with jax.set_mesh(trainer.mesh):
        hlo = trainer.step_fn(batch).lower(trainer.sharded_abstract_state(), batch).compile().as_text()
    text = TEXT_CONFIGS[c.model.text_tower]
    per_device = c.data.texts_per_clip * c.data.sed_clips // trainer.mesh.size
    gathered = [
        tuple(int(d) for d in dims.split(","))
        for dims in re.findall(r"= \w+\[([0-9,]+)\]\S* all-gather\(", hlo)
    ]
    text_activations = [
        shape
        for shape in gathered
        if len(shape) >= 3 and shape[-1] in (text.hidden, text.ffn) and shape[0] > per_device
    ]
    assert gathered, "the step should all-gather the fsdp-split weights"
    assert text_activations == []
