"""The device check's sections that run in one process each (``gpu_check.py`` starts them).

Each ``run_<section>(scratch, smoke, **args) -> dict`` returns JSON-ready figures; scratch
is a folder for files the section makes. On the GPU the sizes are the real ones (the
flam_paper model, HTS-AT base for detection); ``smoke`` runs the same code on this CPU at
tiny sizes: the gpu_small:debug recipe shrunk by ``SMOKE_OVERRIDES``, which the resume
section trains with too, so that every smoke process reads one train step (and one
initialisation) from a shared persistent compilation cache instead of compiling it again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from contextlib import nullcontext

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

# The single-device model and loss tests (no torch), run on the GPU with fp32 matmuls at full
# precision (no TF32 shortcuts). Multi-device cases are left out: one GPU has one device.
PARITY_TESTS = [
    "tests/test_losses_framewise.py::test_ring_matches_dense[1-False]",
    "tests/test_losses_framewise.py::test_ring_matches_dense[1-True]",
    "tests/test_losses_framewise.py::test_ring_with_several_groups_per_device[1-2-False]",
    "tests/test_losses_framewise.py::test_ring_with_several_groups_per_device[1-2-True]",
    "tests/test_losses_framewise.py::test_dense_is_eq4_with_caption_id_duplicates",
    "tests/test_losses_framewise.py::test_normalisers_agree_on_one_device_and_differ_on_two",
    "tests/test_losses.py::test_clip_loss_is_symmetric_cross_entropy",
    "tests/test_losses.py::test_sharded_clip_loss_matches_global[shape0-axes0]",
    "tests/test_losses.py::test_sigmoid_loss_matches_formula",
    "tests/test_losses.py::test_global_losses_reject_mismatched_batches",
    "tests/test_losses.py::test_prior_loss_targets_global_positive_ratio",
    "tests/test_losses.py::test_prior_reference_normalizer_averages_device_means",
    "tests/test_losses.py::test_total_combines_terms_and_reports_metrics",
    "tests/test_losses.py::test_settings_come_from_config",
    "tests/test_flam_model.py::test_initial_temperature_scale_and_bias",
    "tests/test_flam_model.py::test_torch_default_init_bounds",
    "tests/test_flam_model.py::test_ablation_switches_share_one_learned_term_across_texts[False-True]",
    "tests/test_flam_model.py::test_ablation_switches_share_one_learned_term_across_texts[True-False]",
    "tests/test_flam_model.py::test_ablation_switches_share_one_learned_term_across_texts[False-False]",
    "tests/test_flam_model.py::test_global_is_projected_mean_of_frames_not_mean_of_projected",
    "tests/test_flam_model.py::test_frame_scores_formulas",
    "tests/test_flam_model.py::test_normalize_guards_zero_vectors",
    "tests/test_flam_model.py::test_bf16_compute_close_to_fp32",
    "tests/test_flam_model.py::test_build_model_rejects_unknown_names",
    "tests/test_flam_model.py::test_build_model_shapes_from_config",
    "tests/test_flam_model.py::test_text_remat_same_gradients_and_trains_with_dropout[block]",
    "tests/test_flam_model.py::test_text_remat_same_gradients_and_trains_with_dropout[block_save_dots]",
]
# The smoke collects every test above (the list cannot go stale: a missing one is an error)
# but runs only the loss tests: CI runs all of them anyway, and the model tests cost a
# minute on two cores.
PARITY_SMOKE_RUN = [t for t in PARITY_TESTS if "test_flam_model.py" not in t]

PAPER = os.path.join(ROOT, "experiments", "flam_paper.py")
GPU_SMALL_DEBUG = os.path.join(ROOT, "experiments", "gpu_small.py") + ":debug"
# flam_paper on one chip: no model split, random towers (speed does not depend on them).
ONE_CHIP = ["mesh.fsdp=1", "mesh.data=-1"]
# gpu_small:debug at smoke size; the resume section trains exactly this (gpu_resume.py).
SMOKE_OVERRIDES = [
    "model.audio_size=demo",
    "model.text_tower=minilm-l6",
    "model.context_length=8",
    "data.sed_clips=2",
    "data.texts_per_clip=2",
    "data.global_batch=2",
    "data.workers=0",
    "optim.warmup_steps=2",
]
SMOKE_STEPS, SMOKE_CKPT = 6, 3  # the schedule's length is part of the compiled step
PRECISION_BATCH = 8  # SED clips and global pairs of the bf16-versus-fp32 batch (GPU)
QUERIES = ["a dog barking", "a siren wailing", "rain on a roof", "a car engine starting", "people talking"]
QUERIES += ["a door slamming", "birds singing", "a telephone ringing", "footsteps on gravel", "music playing"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4: pad 1, as roberta-base


def cache_dir(scratch: str) -> str:
    """The persistent compilation cache every section and training leg shares, beside the
    sections' own folders (jax keys entries by this path, so all must name the same one)."""
    return os.path.join(os.path.dirname(os.path.abspath(scratch)), "jax_cache")


def device_info() -> dict:
    import jax

    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    return {
        "platform": device.platform,
        "device_kind": getattr(device, "device_kind", device.platform),
        "devices": jax.device_count(),
        "memory_bytes": stats.get("bytes_limit"),
    }


def bpe_tokenizer(texts: list[str], out_dir: str, vocab_size: int = 1000) -> str:
    """A RoBERTa-layout byte-level BPE (vocab.json + merges.txt, pad id 1) trained on
    ``texts``, standing in for roberta-base's, which the device has no network to fetch:
    byte-level pieces encode any text, and the batches' shapes are the context length's
    whatever the tokenizer."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=ROBERTA_SPECIALS)
    os.makedirs(out_dir, exist_ok=True)
    bpe.save_model(out_dir)
    return out_dir


def step_config(smoke: bool, scratch: str, *, sed_clips: int, global_batch: int):
    """The model whose step is timed (flam_paper on one chip; the smoke recipe on the CPU)
    at the given batch, validated, with the shared compilation cache named."""
    from flam_jax.config import apply_assignments, load_experiment, validate

    config = load_experiment(GPU_SMALL_DEBUG if smoke else PAPER)
    config.model.text_weights = ""
    apply_assignments(config, [*SMOKE_OVERRIDES, f"train.steps={SMOKE_STEPS}"] if smoke else ONE_CHIP)
    apply_assignments(config, [f"data.sed_clips={sed_clips}", f"data.global_batch={global_batch}"])
    config.train.compile_cache = cache_dir(scratch)
    return validate(config)


def _enable_cache(config) -> None:
    from flam_jax.train import compile_cache

    compile_cache.enable(config, "/unused")


# --- parity ---------------------------------------------------------------------------


def _junit(path: str) -> dict:
    """Counts and failed test names from a pytest JUnit XML report."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures = []
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        name = f"{case.get('classname')}::{case.get('name')}"
        if "failure" in kinds or "error" in kinds:
            counts["failed" if "failure" in kinds else "errors"] += 1
            failures.append(name)
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return {**counts, "failures": failures}


def run_parity(scratch: str, smoke: bool) -> dict:
    """PARITY_TESTS under pytest on this platform's own devices, fp32 matmuls."""
    platform = "cpu" if smoke else "cuda"
    env = {**os.environ, "FLAM_TEST_PLATFORM": platform, "JAX_DEFAULT_MATMUL_PRECISION": "highest"}
    report = os.path.join(scratch, "parity.xml")
    # Several test processes on the GPU: the model tests compile many small programs.
    options = [f"--deselect={t}" for t in PARITY_TESTS if t not in PARITY_SMOKE_RUN] if smoke else ["-n", "4"]
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
    started = time.perf_counter()
    run = subprocess.run([*argv, *options, *PARITY_TESTS], cwd=ROOT, env=env, capture_output=True, text=True)
    result = _junit(report) if os.path.isfile(report) else {"failures": [], "passed": 0}
    summary = run.stdout.strip().splitlines()[-1:] or [""]
    deselected = re.search(r"(\d+) deselected", summary[0])
    return {
        "platform": platform,
        "matmul_precision": "highest",
        "selected": len(PARITY_TESTS),
        "ran": len(PARITY_SMOKE_RUN if smoke else PARITY_TESTS),
        "deselected": int(deselected.group(1)) if deselected else 0,
        **result,
        "exit_code": run.returncode,
        "seconds": time.perf_counter() - started,
        "output_tail": run.stdout.splitlines()[-5:],
    }


# --- bf16 versus fp32 ------------------------------------------------------------------


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def run_precision(scratch: str, smoke: bool) -> dict:
    """The train step's loss (``Trainer.loss``) of one batch at one set of weights, with the
    model computing in bf16 and in fp32 (fp32 matmuls at full precision: the reference)."""
    import jax
    from train_step import synthetic_batch

    from flam_jax.train.sharding import global_batch
    from flam_jax.train.trainer import Trainer

    n = 2 if smoke else PRECISION_BATCH
    trainers = {}
    for dtype in ("float32", "bfloat16"):
        config = step_config(smoke, scratch, sed_clips=n, global_batch=n)
        config.model.compute_dtype = dtype
        trainers[dtype] = Trainer(config, "/unused", data_factory=lambda c, m: None)
    _enable_cache(config)
    reference = trainers["float32"]
    if jax.tree.structure(trainers["bfloat16"].abstract_state) != jax.tree.structure(
        reference.abstract_state
    ):
        raise AssertionError("bf16 and fp32 models hold different parameters")
    state = reference.init_state()
    batch = global_batch(synthetic_batch(reference.config, reference.mesh), reference.mesh)
    values = {}
    with jax.set_mesh(reference.mesh):
        for dtype, trainer in trainers.items():
            # bf16 runs as training runs it; the fp32 reference without TF32 shortcuts.
            precision = jax.default_matmul_precision("highest") if dtype == "float32" else nullcontext()
            with precision:
                loss, (metrics, _) = jax.jit(trainer.loss)(state.params, state, batch)
            values[dtype] = {"loss": float(loss), **{k: float(v) for k, v in metrics.items()}}
    fp32, bf16 = values["float32"], values["bfloat16"]
    return {
        "model": f"{reference.config.model.audio_size} + {reference.config.model.text_tower}",
        "sed_clips": n,
        "global_batch": n,
        "fp32_matmul_precision": "highest",
        "loss_fp32": fp32["loss"],
        "loss_bf16": bf16["loss"],
        "loss_rel_diff": _relative(bf16["loss"], fp32["loss"]),
        # Every metric of the objective: [fp32, bf16, relative difference].
        "metrics": {k: [fp32[k], bf16[k], _relative(bf16[k], fp32[k])] for k in fp32 if k != "loss"},
    }


# --- train step ------------------------------------------------------------------------


def run_train_step(scratch: str, smoke: bool, batch: int) -> dict:
    """``train_step.measure`` of the model at ``batch`` SED clips + ``batch`` global pairs."""
    import train_step

    config = step_config(smoke, scratch, sed_clips=batch, global_batch=batch)
    _enable_cache(config)
    row = train_step.measure(config, steps=2 if smoke else 5, warmup=1 if smoke else 2)
    return {
        "model": f"{config.model.audio_size} + {config.model.text_tower}",
        "remat": config.model.remat,
        **row,
    }


# --- detection throughput --------------------------------------------------------------


def run_detect(scratch: str, smoke: bool, max_batches: tuple[int, ...]) -> dict:
    """``FLAM.detect`` on a recording of noise against 10 queries, from an export of a random
    model (detect_throughput.py's: HTS-AT base + MiniLM-L6 shapes), hop 5 s; the first
    call compiles, the second is timed."""
    import detect_throughput as dt

    from flam_jax.data.tokenizers import load_tokenizer
    from flam_jax.infer.api import FLAM
    from flam_jax.timeline import SAMPLE_RATE, window_starts

    size, minutes, hop = ("demo", 1.0, 5.0) if smoke else ("base", 10.0, 5.0)
    tokenizer = load_tokenizer(bpe_tokenizer(QUERIES, os.path.join(scratch, "detect_tokenizer")), 16)
    export = dt.export_model(size, os.path.join(scratch, f"export_{size}"), tokenizer)
    wave = np.random.default_rng(0).normal(0, 0.05, int(minutes * 60 * SAMPLE_RATE)).astype(np.float32)
    seconds = wave.size / SAMPLE_RATE
    rows = []
    for max_batch in max_batches:
        flam = FLAM.load(export, max_batch=max_batch)
        wall, cpu = dt.time_detect(flam, wave, QUERIES, hop)
        rows.append(
            {
                "max_batch": max_batch,
                "wall_s": wall,
                "cpu_s": cpu,
                "audio_s_per_s": seconds / wall,
                "windows": len(window_starts(wave.size, int(hop * SAMPLE_RATE))),
            }
        )
    return {"audio_size": size, "audio_s": seconds, "queries": len(QUERIES), "hop_s": hop, "rows": rows}


SECTIONS = {
    "parity": run_parity,
    "precision": run_precision,
    "train_step": run_train_step,
    "detect": run_detect,
}


def write_json(path: str, payload: dict) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=float)
        f.write("\n")
