"""Ahead-of-time compilation of the full train step for a TPU topology, on any host.

``flam-train --compile_only --topology=v5e:16x16`` asks libtpu for the pod's devices
(compile-only devices: no TPU is needed), builds the config's mesh over them, the
abstract train state (``nnx.eval_shape``: no parameter is materialised) and both
batches as sharded ``ShapeDtypeStruct``s, then lowers and compiles the real train step
(both forward passes, all losses with the ring, backward, optimiser update). XLA's
memory and cost analyses of that executable give the report: per-chip memory against
the chip's HBM, FLOPs, and the step-time lower bound at peak bf16 FLOP/s.

libtpu is optional (``pip install .[tpu]``) and only imported here, lazily.
"""

import dataclasses
import json
import math
import os
import re
import tempfile
import time
from contextlib import contextmanager

import jax

from flam_jax import paths, timeline
from flam_jax.data import batches
from flam_jax.errors import CompileOnlyError, DoesNotFitError
from flam_jax.train.data import uses_global, uses_sed
from flam_jax.train.sharding import batch_sharding, sed_groups
from flam_jax.train.trainer import Trainer

GIB = 2**30

# Per-chip HBM and peak dense bf16 FLOP/s, from Google Cloud's public TPU spec sheets
# (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e). Keys: the ``device_kind`` that
# libtpu reports for each generation's compile-only devices.
TPU_CHIPS = {
    "TPU v4": ("v4", 32 * GIB, 275e12),
    "TPU v5 lite": ("v5e", 16 * GIB, 197e12),
    "TPU v5": ("v5p", 95 * GIB, 459e12),
    "TPU v5p": ("v5p", 95 * GIB, 459e12),
    "TPU v6 lite": ("v6e", 32 * GIB, 918e12),
    "TPU v6e": ("v6e", 32 * GIB, 918e12),
}

# libtpu's start-up noise on a host without TPU metadata (no accelerator type, no worker
# hostnames): harmless for compile-only devices, so it is not shown.
_LIBTPU_NOISE = re.compile(
    r"TPU_ACCELERATOR_TYPE|TPU_WORKER_HOSTNAMES|host bounds|Logging before InitGoogle|"
    r"Source Location Trace|libtpu_init_utils|^\s*$"
)


@contextmanager
def _filtered_stderr():
    """Capture fd 2 (libtpu writes from C++) and re-emit all but the known noise."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines = tmp.read().decode("utf-8", "replace").splitlines()
            kept = [line for line in lines if not _LIBTPU_NOISE.search(line)]
            if kept:
                os.write(2, ("\n".join(kept) + "\n").encode())


def _chips_in_name(name: str) -> int | None:
    match = re.fullmatch(r"[A-Za-z0-9_ ]+[:=_]([0-9x]+)", name)
    return math.prod(int(d) for d in match.group(1).split("x")) if match else None


def topology_devices(name: str) -> list:
    """The compile-only devices of a TPU topology such as ``v5e:2x2`` or ``v4:4x4x8``.

    Chips with two TensorCores (v4, v5p) are asked for in megacore mode, one device per
    chip, as JAX runs them on a real pod.
    """
    try:
        import libtpu  # noqa: F401  (only to tell a missing install apart from a bad name)
    except ImportError as err:
        raise CompileOnlyError(
            "--compile_only needs libtpu: pip install '.[tpu]' (or libtpu==0.0.42.1 for jax 0.10.2)"
        ) from err
    # libtpu takes a machine-wide lock file unless told otherwise; compile-only devices
    # never touch a chip, so several checks (or one beside a running job) may share it.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    def get(**options):
        with _filtered_stderr():
            return topologies.get_topology_desc(platform="tpu", topology_name=name, **options).devices

    try:
        devices = get()
        chips = _chips_in_name(name)
        if chips and len(devices) == 2 * chips:
            devices = get(chip_config_name="megacore")
    except Exception as err:  # libtpu raises JaxRuntimeError/RuntimeError with its reason
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CompileOnlyError(f"topology {name!r} is not one libtpu knows: {reason}") from err
    return list(devices)


def chip_spec(device_kind: str) -> tuple[str, int | None, float | None]:
    """(generation, HBM bytes, peak bf16 FLOP/s) of a device kind; None where unknown."""
    return TPU_CHIPS.get(device_kind, (device_kind, None, None))


def abstract_batch(config, mesh, *, samples: int | None = None, frames: int | None = None) -> dict:
    """The batches the objective reads as sharded ShapeDtypeStructs, in the pipeline's
    layout (``data.batches.train_fields``).

    ``samples``/``frames`` default to the real model's (10 s at 48 kHz, 32 label frames).
    """
    fields = batches.train_fields(
        config,
        sed_groups=sed_groups(config, mesh) if uses_sed(config) else None,
        with_global=uses_global(config),
        num_samples=samples or timeline.WINDOW_SAMPLES,
        frames=frames or timeline.NUM_FRAMES,
    )
    return {
        part: {
            name: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding(mesh, len(shape)))
            for name, (shape, dtype) in arrays.items()
        }
        for part, arrays in fields.items()
    }


@dataclasses.dataclass
class CompileReport:
    config_name: str
    topology: str
    chips: int
    chip: str  # generation, e.g. "v5e"
    device_kind: str  # as libtpu reports it
    mesh: dict  # axis -> size
    remat: str
    compute_dtype: str
    sed_clips: int
    texts_per_clip: int
    global_batch: int
    examples_per_step: int
    per_device_examples: float
    argument_bytes: int  # per chip: state + batch shards
    output_bytes: int
    alias_bytes: int  # outputs written in place of donated arguments
    temp_bytes: int  # activations and other scratch
    code_bytes: int
    total_bytes: int  # argument + output - alias + temp + code
    hbm_bytes: int | None
    fits: bool | None
    flops_per_device: float  # XLA's cost analysis is per device (verified on a matmul)
    flops_per_step: float  # all chips together
    flops_per_example: float
    peak_flops_per_chip: float | None
    step_time_lower_bound_s: float | None  # flops_per_device / peak
    max_examples_per_s: float | None
    compile_s: float

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def markdown(self) -> str:
        def gib(n):
            return "n/a" if n is None else f"{n / GIB:.2f} GiB"

        fits = {True: "yes", False: "NO", None: "unknown (HBM of this chip not in the table)"}[self.fits]
        bound = self.step_time_lower_bound_s
        rows = [
            ("config", self.config_name),
            ("topology", f"{self.topology}: {self.chips} chips, {self.device_kind} ({self.chip})"),
            ("mesh", " x ".join(f"{k}={v}" for k, v in self.mesh.items())),
            ("model", f"remat={self.remat}, compute {self.compute_dtype}"),
            (
                "batch per step",
                f"SED {self.sed_clips} clips x {self.texts_per_clip} texts + global {self.global_batch}"
                f" = {self.examples_per_step} examples ({self.per_device_examples:g} per chip)",
            ),
            ("argument memory / chip", gib(self.argument_bytes)),
            ("output memory / chip", gib(self.output_bytes)),
            ("aliased (donated) / chip", gib(self.alias_bytes)),
            ("temporary memory / chip", gib(self.temp_bytes)),
            ("code / chip", gib(self.code_bytes)),
            ("total / chip", f"{gib(self.total_bytes)} of {gib(self.hbm_bytes)} HBM"),
            ("fits", fits),
            ("FLOPs / step", f"{self.flops_per_step:.4g} ({self.flops_per_device:.4g} per chip)"),
            ("FLOPs / example", f"{self.flops_per_example:.4g}"),
            (
                "peak bf16 / chip",
                "n/a" if self.peak_flops_per_chip is None else f"{self.peak_flops_per_chip:.4g}",
            ),
            (
                "step time lower bound",
                "n/a"
                if bound is None
                else f"{bound * 1e3:.1f} ms (at 100% MFU; ≤ {self.max_examples_per_s:.0f} examples/s)",
            ),
            ("compile time", f"{self.compile_s:.1f} s"),
        ]
        lines = ["| field | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
        return "\n".join(lines) + "\n"


def compiled_flops(compiled) -> float:
    """FLOPs per device of a compiled executable, from XLA's cost analysis (0 when absent)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0))


# XLA:TPU's wording differs between passes; both name the need and the capacity.
_HBM_EXHAUSTED = (
    re.compile(r"Used ([0-9.]+[KMGTP]?i?B?) of ([0-9.]+[KMGTP]?i?B?) hbm", re.I),
    re.compile(r"\(([0-9.]+[KMGTP]?)\) exceeds available HBM \(([0-9.]+[KMGTP]?)\)", re.I),
)


def _oom_message(err: Exception) -> str | None:
    text = str(err)
    if "RESOURCE_EXHAUSTED" not in text and "Ran out of memory" not in text:
        return None
    for pattern in _HBM_EXHAUSTED:
        match = pattern.search(text)
        if match:
            return f"needs {match.group(1)}B per chip, the chip has {match.group(2)}B of HBM"
    return text.splitlines()[0][:200]


def compile_train_step(config, topology: str, *, model_factory=None, batch_fn=None) -> CompileReport:
    """Lower and compile the full train step of ``config`` for ``topology``; the report.

    Raises ``DoesNotFitError`` (with the report's advice) when the compiler runs out of
    HBM; a report whose ``fits`` is False is returned, the caller decides.
    ``model_factory`` / ``batch_fn(config, mesh)`` swap in small stand-ins (tests).
    """
    devices = topology_devices(topology)
    trainer = Trainer(
        config, "", model_factory=model_factory, data_factory=lambda c, m: None, devices=devices
    )
    mesh = trainer.mesh
    batch = (batch_fn or abstract_batch)(config, mesh)
    state = trainer.sharded_abstract_state()
    kind = devices[0].device_kind
    chip, hbm, peak = chip_spec(kind)
    chips = len(devices)
    examples = trainer.examples_per_step
    start = time.perf_counter()
    try:
        with _filtered_stderr(), jax.set_mesh(mesh):
            compiled = trainer.step_fn(batch).lower(state, batch).compile()
    except Exception as err:
        oom = _oom_message(err)
        if oom is None:
            raise CompileOnlyError(
                f"compiling for {topology} failed: {str(err).splitlines()[0][:300]}"
            ) from err
        partial = dict(mesh=dict(mesh.shape), remat=config.model.remat, examples=examples / chips)
        raise DoesNotFitError(
            f"{config.name} does not fit on {topology} ({kind}): the step {oom}; " + _advice(**partial)
        ) from err
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    argument, output = memory.argument_size_in_bytes, memory.output_size_in_bytes
    alias, temp = memory.alias_size_in_bytes, memory.temp_size_in_bytes
    code = memory.generated_code_size_in_bytes
    total = argument + output - alias + temp + code
    flops_device = compiled_flops(compiled)
    flops_step = flops_device * chips
    bound = flops_device / peak if peak else None
    return CompileReport(
        config_name=config.name,
        topology=topology,
        chips=chips,
        chip=chip,
        device_kind=kind,
        mesh=dict(mesh.shape),
        remat=config.model.remat,
        compute_dtype=config.model.compute_dtype,
        # Batches the objective does not read are reported as 0 (flam_global has no SED batch).
        sed_clips=config.data.sed_clips if uses_sed(config) else 0,
        texts_per_clip=config.data.texts_per_clip if uses_sed(config) else 0,
        global_batch=config.data.global_batch if uses_global(config) else 0,
        examples_per_step=examples,
        per_device_examples=examples / chips,
        argument_bytes=argument,
        output_bytes=output,
        alias_bytes=alias,
        temp_bytes=temp,
        code_bytes=code,
        total_bytes=total,
        hbm_bytes=hbm,
        fits=None if hbm is None else total <= hbm,
        flops_per_device=flops_device,
        flops_per_step=flops_step,
        flops_per_example=flops_step / max(1, examples),
        peak_flops_per_chip=peak,
        step_time_lower_bound_s=bound,
        max_examples_per_s=examples / bound if bound else None,
        compile_s=compile_s,
    )


def _advice(*, mesh: dict, remat: str, examples: float) -> str:
    return (
        f"lower the per-device batch (now {examples:.4g} examples: data.sed_clips, data.global_batch),"
        f" use model.remat=block (now {remat}), or raise mesh.fsdp (now {mesh.get('fsdp')})"
    )


def write_report(report: CompileReport, workdir: str) -> tuple[str, str]:
    """``WORKDIR/compile_report.{json,md}``; returns both paths."""
    paths.makedirs(workdir)
    json_path = paths.join(workdir, "compile_report.json")
    md_path = paths.join(workdir, "compile_report.md")
    paths.write_text(json_path, json.dumps(report.to_json(), indent=2))
    title = f"# Compile-only report: {report.config_name} on {report.topology}\n\n"
    paths.write_text(md_path, title + report.markdown())
    return json_path, md_path


def run_compile_only(config, workdir: str, topology: str) -> int:
    """The CLI path: compile, print and write the report; DoesNotFitError if too big."""
    if not topology:
        raise CompileOnlyError("--compile_only needs --topology=NAME (e.g. v5e:2x2, v4:4x4x8, v5p:4x4x8)")
    report = compile_train_step(config, topology)
    json_path, md_path = write_report(report, workdir)
    print(report.markdown(), end="")
    print(f"report written to {json_path} and {md_path}")
    if report.fits is False:
        raise DoesNotFitError(
            f"{report.config_name} does not fit on {report.topology}: {report.total_bytes / GIB:.2f} GiB"
            f" per chip > {report.hbm_bytes / GIB:.0f} GiB HBM; "
            + _advice(mesh=report.mesh, remat=report.remat, examples=report.per_device_examples)
        )
    return 0
