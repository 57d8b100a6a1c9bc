"""Compile-only TPU figures: per-chip memory, FLOPs and the largest batch that fits.

    python benchmarks/tpu_compile.py --config=experiments/flam_paper.py --topology=v5e:16x16 \
        [--remat=none,block] [--search] [--set mesh.fsdp=8] [--out=benchmarks/tpu_compile.jsonl]

For each remat policy the config's own batch is compiled (train.aot, libtpu's compile-only
devices: no TPU needed). With ``--search`` the per-chip batch is doubled until the step
no longer fits, then bisected between the last fit and the first miss (SED clips and
global pairs scale together, multiples of the chip count). Every compile appends one
JSON line to ``--out`` (so a long run keeps what it got) and prints a table row.
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from flam_jax.config import apply_assignments, load_experiment, validate  # noqa: E402
from flam_jax.errors import FlamError  # noqa: E402
from flam_jax.train import aot  # noqa: E402
from flam_jax.train.data import uses_global, uses_sed  # noqa: E402


def _with_batch(config, per_chip: int, chips: int):
    c = config.copy_and_resolve_references()
    if uses_sed(c):
        c.data.sed_clips = per_chip * chips
    if uses_global(c):
        c.data.global_batch = per_chip * chips
    return validate(c)


def _compile(config, topology, out) -> dict:
    row = {
        "config": config.name,
        "topology": topology,
        "remat": config.model.remat,
        "sed_clips": config.data.sed_clips if uses_sed(config) else 0,
        "global_batch": config.data.global_batch if uses_global(config) else 0,
    }
    t0 = time.perf_counter()
    try:
        report = aot.compile_train_step(config, topology)
        row.update(report.to_json())
    except aot.DoesNotFitError as err:
        row.update(fits=False, error=str(err))
    except FlamError as err:
        row.update(fits=None, error=str(err))
    row["wall_s"] = time.perf_counter() - t0
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(_row(row), flush=True)
    return row


def _row(r) -> str:
    gib = r.get("total_bytes")
    memory = f"{gib / aot.GIB:.2f} GiB" if gib is not None else "> HBM (compiler)"
    bound = r.get("step_time_lower_bound_s")
    return (
        f"| {r['config']} | {r['topology']} | remat={r['remat']} | SED {r['sed_clips']} + global"
        f" {r['global_batch']} | {memory} | {'yes' if r.get('fits') else 'no'}"
        f" | {r.get('flops_per_step', float('nan')):.3g} | "
        + (f"{bound * 1e3:.0f} ms" if bound else "n/a")
        + f" | {r['wall_s']:.0f} s |"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--topology", required=True)
    parser.add_argument("--remat", default="none,block")
    parser.add_argument("--set", action="append", default=[], help="key=value override")
    parser.add_argument("--search", action="store_true", help="largest per-chip batch that fits")
    parser.add_argument("--max_per_chip", type=int, default=256)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "tpu_compile.jsonl"))
    args = parser.parse_args(argv)
    base = load_experiment(args.config)
    base.model.text_weights = ""
    apply_assignments(base, args.set)
    chips = len(aot.topology_devices(args.topology))
    print("| config | topology | remat | batch | total / chip | fits | FLOPs / step | step ≥ | compile |")
    print("|---|---|---|---|---|---|---|---|---|")
    for remat in args.remat.split(","):
        config = base.copy_and_resolve_references()
        config.model.remat = remat
        validate(config)
        first = _compile(config, args.topology, args.out)
        if not args.search:
            continue
        per_chip = max(config.data.sed_clips if uses_sed(config) else 0, config.data.global_batch) // chips
        fit, miss = (per_chip, None) if first.get("fits") else (0, per_chip)
        while miss is None and fit < args.max_per_chip:
            trial = max(1, fit * 2)
            ok = _compile(_with_batch(config, trial, chips), args.topology, args.out).get("fits")
            fit, miss = (trial, None) if ok else (fit, trial)
        while miss is not None and miss - fit > 1 and (miss - fit) * 4 > fit:
            trial = (fit + miss) // 2
            ok = _compile(_with_batch(config, trial, chips), args.topology, args.out).get("fits")
            fit, miss = (trial, miss) if ok else (fit, trial)
        print(
            f"largest per-chip batch that fits with remat={remat}: {fit} (global {fit * chips})", flush=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
