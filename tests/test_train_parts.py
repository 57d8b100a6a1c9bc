"""Train building blocks: mesh and partition rules, lr schedule, TensorBoard event files."""

import os
import socket
import types

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from flam_jax.config import base_config
from flam_jax.errors import ConfigError
from flam_jax.train import metrics as metrics_lib
from flam_jax.train import sharding
from flam_jax.train.optim import learning_rate_schedule


def _mesh_config(data, fsdp):
    return types.SimpleNamespace(data=data, fsdp=fsdp, rules="", shard_min_size=16)


def test_mesh_shape_fills_the_free_axis_and_rejects_mismatches():
    assert sharding.mesh_shape(_mesh_config(-1, 2), 8) == (4, 2)
    assert sharding.mesh_shape(_mesh_config(2, -1), 8) == (2, 4)
    assert sharding.mesh_shape(_mesh_config(8, 1), 8) == (8, 1)
    for data, fsdp in ((-1, -1), (-1, 3), (2, 2)):
        with pytest.raises(ConfigError):
            sharding.mesh_shape(_mesh_config(data, fsdp), 8)
    mesh = sharding.make_mesh(_mesh_config(-1, 2))
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2}


def test_partition_rules_and_fsdp_heuristic():
    rules = sharding.parse_rules(r"embed=fsdp,none; logit_scale=replicate")
    spec = lambda path, shape: sharding.leaf_spec(path, shape, fsdp=4, rules=rules, min_size=64)
    assert spec("text/embed/embedding", (1000, 8)) == P("fsdp", None)
    assert spec("logit_scale", (4096,)) == P()
    assert spec("audio/bias", (32,)) == P()  # small: replicated
    assert spec("audio/kernel", (6, 96, 40)) == P(None, "fsdp")  # largest divisible dim
    assert spec("audio/odd", (7, 9, 11)) == P()  # nothing divides: replicated
    with pytest.raises(ConfigError, match="unknown axis"):
        sharding.parse_rules("x=model")
    with pytest.raises(ConfigError, match="not divisible"):
        sharding.leaf_spec("w", (6, 5), fsdp=4, rules=sharding.parse_rules("w=fsdp"), min_size=1)


def test_schedule_warms_up_from_the_first_step_then_decays_to_zero():
    c = base_config().optim
    c.lr, c.warmup_steps = 1.0, 4
    for kind in ("cosine", "linear", "constant"):
        c.decay = kind
        lr = np.array([float(learning_rate_schedule(c, 20)(i)) for i in range(21)])
        np.testing.assert_allclose(lr[:4], [0.25, 0.5, 0.75, 1.0])
        assert lr[4] == pytest.approx(1.0)
        if kind == "constant":
            assert lr[-1] == pytest.approx(1.0)
        else:
            assert np.all(np.diff(lr[4:]) <= 1e-7) and lr[20] == pytest.approx(0.0, abs=1e-6)


def _tensorboard_events(path):
    """An event file's records as TensorBoard's own loader reads them: each record's
    framing and CRC-32C checked (a bad one ends the list), each parsed as an ``Event``."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    return list(LegacyEventFileLoader(str(path)).Load())


def test_metric_writer_jsonl_and_tensorboard_events(tmp_path):
    writer = metrics_lib.MetricWriter(str(tmp_path), enabled=True)
    writer.write(7, {"loss": 1.5, "lr": 3e-4})
    writer.write(300000, {"loss": -2.25})
    writer.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines[0] == '{"step": 7, "loss": 1.5, "lr": 0.0003}'
    (events_file,) = list((tmp_path / "tensorboard").iterdir())
    events = _tensorboard_events(events_file)
    assert events[0].file_version == "brain.Event:2"
    scalars = [(e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value]
    assert scalars == [(7, "loss", 1.5), (7, "lr", pytest.approx(3e-4)), (300000, "loss", -2.25)]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(tmp_path / "tensorboard"))  # what TensorBoard's scalar view reads
    board.Reload()
    assert sorted(board.Tags()["scalars"]) == ["loss", "lr"]
    assert [(s.step, s.value) for s in board.Scalars("loss")] == [(7, 1.5), (300000, -2.25)]
    quiet = metrics_lib.MetricWriter(str(tmp_path / "other"), enabled=False)
    quiet.write(1, {"loss": 1.0})
    assert not (tmp_path / "other").exists()


def test_a_second_metric_writer_in_the_same_second_gets_its_own_event_file(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics_lib.time, "time", lambda: 1_700_000_000.5)
    for step in (1, 2):
        writer = metrics_lib.MetricWriter(str(tmp_path), enabled=True)
        writer.write(step, {"loss": float(step)})
        writer.close()
    files = sorted((tmp_path / "tensorboard").iterdir())
    stem = f"events.out.tfevents.1700000000.{socket.gethostname()}.{os.getpid()}"
    assert [f.name for f in files] == [stem, f"{stem}.1"]  # the first is not truncated
    steps = [[e.step for e in _tensorboard_events(f)[1:]] for f in files]
    assert steps == [[1], [2]]
