"""Compile-only (train.aot): the full train step compiled for a TPU topology on this CPU host."""

import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flam_jax import config as config_lib
from flam_jax.cli.train import main
from flam_jax.errors import ConfigError
from flam_jax.train import aot

pytest.importorskip("libtpu", reason="compile-only needs libtpu (requirements-test.txt pins it)")

GIB = 2**30
REPORT_FIELDS = {f.name for f in aot.CompileReport.__dataclass_fields__.values()}


def _json(workdir):
    with open(workdir / "compile_report.json") as f:
        return json.load(f)


def test_cost_analysis_flops_are_per_device():
    """A matmul split 4 ways reports a quarter of 2·M·K·N: the report multiplies by chips."""
    devices = aot.topology_devices("v5e:2x2")
    mesh = Mesh(np.asarray(devices).reshape(4), ("d",))
    m, k, n = 512, 1024, 256
    rows = NamedSharding(mesh, PartitionSpec("d"))
    a = jax.ShapeDtypeStruct((m, k), jnp.bfloat16, sharding=rows)
    b = jax.ShapeDtypeStruct((k, n), jnp.bfloat16, sharding=NamedSharding(mesh, PartitionSpec()))
    compiled = jax.jit(lambda x, y: x @ y, out_shardings=rows).lower(a, b).compile()
    assert aot.compiled_flops(compiled) == pytest.approx(2 * m * k * n / 4)


def test_topology_devices_megacore_and_errors():
    assert len(aot.topology_devices("v4:2x2x1")) == 4  # one device per chip, not per core
    assert aot.topology_devices("v5e:2x2")[0].device_kind in aot.TPU_CHIPS
    with pytest.raises(aot.CompileOnlyError, match="v9:2x2"):
        aot.topology_devices("v9:2x2")


def test_missing_libtpu_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "libtpu", None)  # import libtpu -> ImportError
    with pytest.raises(aot.CompileOnlyError, match=r"pip install '\.\[tpu\]'") as err:
        aot.topology_devices("v5e:2x2")
    assert "\n" not in str(err.value)


def test_remat_names_are_validated_and_match_the_towers_policies():
    from flam_jax.models.configs import REMAT_POLICIES

    for name in REMAT_POLICIES:
        c = config_lib.base_config()
        c.model.remat = name
        config_lib.validate(c)
    c.model.remat = "full"
    with pytest.raises(ConfigError, match="model.remat"):
        config_lib.validate(c)


def test_compile_only_needs_a_topology(tmp_path, capsys):
    argv = ["flam-train", "--config=experiments/cpu_demo.py:tiny", f"--workdir={tmp_path}", "--compile-only"]
    assert main(argv) == 2
    assert "--topology" in capsys.readouterr().err


@pytest.mark.slow
def test_cpu_demo_compiles_for_v5e_2x2_with_a_full_report(tmp_path, capsys):
    argv = [
        "flam-train",
        "--config=experiments/cpu_demo.py:tiny",
        f"--workdir={tmp_path}",
        "--compile-only",
        "--topology=v5e:2x2",
        "--config.model.text_weights=",
        "--config.model.remat=none",
        "--config.data.sed_clips=4",
        "--config.data.global_batch=4",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    report = _json(tmp_path)
    assert set(report) == REPORT_FIELDS
    assert report["config_name"] == "cpu_demo" and report["topology"] == "v5e:2x2"
    assert report["chips"] == 4 and report["chip"] == "v5e" and report["device_kind"] == "TPU v5 lite"
    assert report["mesh"] == {"data": 4, "fsdp": 1}
    assert report["remat"] == "none" and report["compute_dtype"] == "float32"
    assert (report["sed_clips"], report["texts_per_clip"], report["global_batch"]) == (4, 2, 4)
    assert report["examples_per_step"] == 8 and report["per_device_examples"] == 2
    # The batch alone is 2 clips x 480000 float32 samples per chip (and the state more).
    assert report["argument_bytes"] > 2 * 480_000 * 4
    # The donated state comes back in place: outputs alias (nearly) all of it.
    assert 0 < report["alias_bytes"] <= report["output_bytes"] <= report["argument_bytes"]
    assert report["temp_bytes"] > 0 and report["code_bytes"] > 0
    total = sum(report[k] for k in ("argument_bytes", "output_bytes", "temp_bytes", "code_bytes"))
    assert report["total_bytes"] == total - report["alias_bytes"]
    assert report["hbm_bytes"] == 16 * GIB and report["fits"] is True
    assert report["peak_flops_per_chip"] == 197e12
    # Forward + backward of two towers over 8 ten-second clips: well over 1 GFLOP/example.
    assert report["flops_per_device"] > 1e9
    assert report["flops_per_step"] == pytest.approx(4 * report["flops_per_device"])
    assert report["flops_per_example"] == pytest.approx(report["flops_per_step"] / 8)
    bound = report["flops_per_device"] / 197e12
    assert report["step_time_lower_bound_s"] == pytest.approx(bound)
    assert report["max_examples_per_s"] == pytest.approx(8 / bound)
    assert report["compile_s"] > 0
    markdown = (tmp_path / "compile_report.md").read_text()
    for row in ("argument memory / chip", "temporary memory / chip", "total / chip", "FLOPs / example"):
        assert row in markdown and row in out
    assert "| fits | yes |" in markdown
    assert "TPU_WORKER_HOSTNAMES" not in capsys.readouterr().err  # libtpu's noise is filtered


def test_oversized_per_device_batch_is_reported_as_not_fitting(tmp_path, monkeypatch, capsys):
    """Stand-in towers (a fast compile), 2^20 pairs per chip: its InfoNCE logits alone need > 16 GiB."""
    import train_standins

    from flam_jax.train import trainer

    monkeypatch.setattr(trainer, "default_model_factory", train_standins.standin_model_factory)
    monkeypatch.setattr(
        aot,
        "abstract_batch",
        functools.partial(aot.abstract_batch, samples=train_standins.SAMPLES, frames=train_standins.FRAMES),
    )
    argv = [
        "flam-train",
        "--config=experiments/flam_global.py",
        f"--workdir={tmp_path}",
        "--compile-only",
        "--topology=v5e:2x2",
        "--config.mesh.fsdp=1",
        f"--config.data.global_batch={4 * 2**20}",
    ]
    assert main(argv) == 2
    assert json.loads((tmp_path / "config.json").read_text())["data"]["global_batch"] == 4 * 2**20
    assert not (tmp_path / "compile_report.json").exists()
    err = capsys.readouterr().err.strip().splitlines()
    message = [line for line in err if line.startswith("error:")]
    assert len(message) == 1, err
    assert "does not fit on v5e:2x2" in message[0]
    for advice in ("per-device batch", "model.remat", "mesh.fsdp"):
        assert advice in message[0]


def test_global_only_objective_does_not_need_a_splittable_sed_batch():
    """flam_global on 256 chips: its unused data.sed_clips must not stop the build."""
    from flam_jax.train.objective import make_objective
    from flam_jax.train.sharding import make_mesh

    c = config_lib.validate(config_lib.load_experiment("experiments/flam_global.py"))
    c.data.sed_clips, c.data.global_batch = 3, 8
    mesh = make_mesh(c.mesh, jax.devices()[:8])
    assert callable(make_objective(c, mesh))
    c.loss.w_sed = 1.0  # now the SED batch is read, and 3 clips do not split over 8 devices
    with pytest.raises(ConfigError, match="sed_clips=3"):
        make_objective(c, mesh)


def test_report_counts_only_the_batches_the_objective_reads(monkeypatch):
    """flam_global reads no SED batch: its report says SED 0, not the unused config value."""
    import train_standins

    from flam_jax.train import trainer

    monkeypatch.setattr(trainer, "default_model_factory", train_standins.standin_model_factory)
    monkeypatch.setattr(
        aot,
        "abstract_batch",
        functools.partial(aot.abstract_batch, samples=train_standins.SAMPLES, frames=train_standins.FRAMES),
    )
    c = config_lib.validate(config_lib.load_experiment("experiments/flam_global.py"))
    c.mesh.fsdp, c.data.global_batch = 1, 8
    report = aot.compile_train_step(c, "v5e:2x2").to_json()
    assert (report["sed_clips"], report["texts_per_clip"], report["global_batch"]) == (0, 0, 8)
    assert report["examples_per_step"] == 8 and report["fits"] is True


def _search_module():
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "tpu_compile.py")
    spec = importlib.util.spec_from_file_location("tpu_compile_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("base", "per_example", "start"),
    [(1.0, 1.2, 8), (0.6, 0.05, 3), (5.0, 1.0, 16), (15.5, 3.0, 4), (2.0, 0.9, 1)],
)
def test_largest_batch_search_finds_the_boundary_in_few_compiles(base, per_example, start):
    """A near-linear memory curve (with a bump so the line is never exact): the search
    returns the true largest fit (brute force) in a handful of compiles."""
    search = _search_module()
    hbm = 16 * GIB

    def total(b):
        return int((base + per_example * b + 0.02 * (b % 3)) * GIB)

    compiled = []

    def row(b):
        compiled.append(b)
        return {"total_bytes": total(b), "hbm_bytes": hbm, "fits": total(b) <= hbm}

    found = search._largest_fit(start, row(start), row, cap=512)
    assert found == max([0] + [b for b in range(1, 513) if total(b) <= hbm])
    assert len(compiled) <= 6, compiled


def test_resumed_search_starts_from_every_earlier_row(tmp_path):
    """--resume: superseded rows are ignored, the search's own earlier rows seed it, and
    it finishes the boundary with new compiles only between the known fit and miss."""
    import os

    search = _search_module()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = config_lib.load_experiment(os.path.join(root, "experiments", "flam_paper.py"))
    config.model.remat = "none"
    chips, hbm = 128, 16 * GIB

    def total(b):
        return int((1.0 + 0.45 * b) * GIB)

    def row(b, **extra):
        return {
            "config": "flam_paper",
            "topology": "v4:4x4x8",
            "remat": "none",
            "sed_clips": b * chips,
            "global_batch": b * chips,
            "total_bytes": total(b),
            "hbm_bytes": hbm,
            "fits": total(b) <= hbm,
            **extra,
        }

    out = tmp_path / "rows.jsonl"
    earlier_rows = [row(4), row(26), row(40), row(31, superseded=True), {**row(8), "remat": "block"}]
    out.write_text("".join(json.dumps(r) + "\n" for r in earlier_rows))

    earlier = search._earlier_rows(str(out))
    known = search._searched_rows(config, "v4:4x4x8", chips, earlier)
    assert sorted(known) == [4, 26, 40]

    compiled = []

    def compile_at(b):
        compiled.append(b)
        return row(b)

    found = search._largest_fit(4, known[4], compile_at, cap=256, known=known)
    assert found == max(b for b in range(1, 257) if total(b) <= hbm)
    assert compiled and all(26 < b < 40 for b in compiled) and len(compiled) <= 3, compiled


def _search_up_to(boundary, total, start, cap):
    """Run the search against a compiler that refuses every batch above ``boundary`` and
    reports ``total(b)`` bytes for the rest; returns (largest fit found, batches compiled)."""
    hbm = 16 * GIB
    compiled = []

    def row(b):
        compiled.append(b)
        if b > boundary:
            return {"hbm_bytes": hbm, "fits": False}
        return {"total_bytes": total(b), "hbm_bytes": hbm, "fits": True}

    return _search_module()._largest_fit(start, row(start), row, cap=cap), compiled


@pytest.mark.parametrize("boundary", [31, 37, 52, 90])
def test_largest_batch_search_when_xla_flattens_memory_near_hbm(boundary):
    """Near HBM XLA rematerialises by itself: compiled memory stops rising (and can drop)
    while the true boundary lies further out. The line through such points would step 1
    at a time (or, with a falling slope, jump to the cap); the search must still return
    the boundary, in about as many compiles as bisection."""

    def total(b):
        linear = (3.0 + 0.45 * b) * GIB
        return int(min(linear, (14.7 - 0.01 * (b % 5)) * GIB))

    found, compiled = _search_up_to(boundary, total, start=2, cap=256)
    assert found == boundary
    assert len(compiled) <= 12, compiled


@pytest.mark.parametrize("boundary", [150, 420, 1100])
def test_largest_batch_search_when_memory_flattens_below_the_saturation_mark(boundary):
    """flam_global on v5e:16x16: memory flattens at ≈ 89 % of HBM, just under SATURATED, and
    still creeps up, so the line through the flat points reaches HBM far beyond the true
    boundary. After that trial misses, the search must bisect rather than step down one
    batch at a time from the miss."""

    def total(b):
        linear = (2.24 + 0.177 * (b - 3)) * GIB
        flat = (14.2 + 0.0015 * (b - 81) - 0.02 * (b % 3)) * GIB
        return int(min(linear, flat))

    found, compiled = _search_up_to(boundary, total, start=3, cap=2048)
    assert found == boundary
    assert len(compiled) <= 16, compiled
