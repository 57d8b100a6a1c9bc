"""Compile-only TPU figures: per-chip memory, FLOPs and the largest batch that fits.

    python benchmarks/tpu_compile.py --config=experiments/flam_paper.py --topology=v5e:16x16 \
        [--remat=none,block] [--search] [--resume] [--set mesh.fsdp=8] [--out=benchmarks/tpu_compile.jsonl]

For each remat policy the config's own batch is compiled (train.aot, libtpu's compile-only
devices: no TPU needed). With ``--search`` the largest per-chip batch that fits is found
(SED clips and global pairs scale together, multiples of the chip count): memory per
chip is close to linear in the per-chip batch until about 90 % of HBM, so after a second
point each trial is the batch where the line through the two nearest compiled points
meets the chip's HBM. Nearer HBM, XLA rematerialises on its own and memory flattens
(even drops), so the search probes half again beyond the fit and bisects, until the fit
and the miss are adjacent. A pod-sized compile takes 2-20 min here. Every compile appends
one JSON line to ``--out`` (so a long run keeps what it got) and prints a table row;
``--resume`` reuses those rows, and a resumed search starts from all of its earlier points.
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


def _key(row) -> tuple:
    return tuple(row[k] for k in ("config", "topology", "remat", "sed_clips", "global_batch"))


def _earlier_rows(out) -> dict:
    """Rows already in ``out`` by (config, topology, remat, SED clips, global batch);
    rows marked ``superseded`` (compiled from older code) are left out."""
    if not os.path.exists(out):
        return {}
    with open(out) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {_key(row): row for row in rows if not row.get("superseded")}


def _per_chip(row, chips: int) -> int:
    """A row's per-chip batch: SED clips and global pairs per chip grow together."""
    return max(row["sed_clips"], row["global_batch"]) // chips


def _searched_rows(config, topology, chips, earlier) -> dict:
    """Earlier rows a search of this config could have compiled, by per-chip batch, so a
    resumed search starts from every point it already has, not only those it replays."""
    known = {}
    for row in earlier.values():
        per_chip = _per_chip(row, chips)
        if per_chip > 0 and _key(row) == _key(_batch_row(_with_batch(config, per_chip, chips), topology)):
            known[per_chip] = row
    return known


def _batch_row(config, topology) -> dict:
    return {
        "config": config.name,
        "topology": topology,
        "remat": config.model.remat,
        "sed_clips": config.data.sed_clips if uses_sed(config) else 0,
        "global_batch": config.data.global_batch if uses_global(config) else 0,
    }


def _compile(config, topology, out, earlier=None) -> dict:
    row = _batch_row(config, topology)
    if earlier and _key(row) in earlier:
        print(_row(earlier[_key(row)]) + " (from --out)", flush=True)
        return earlier[_key(row)]
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
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the rows --out already has (except those marked superseded)",
    )
    args = parser.parse_args(argv)
    earlier = _earlier_rows(args.out) if args.resume else {}
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
        first = _compile(config, args.topology, args.out, earlier)
        if not args.search:
            continue
        fit = _largest_fit(
            _per_chip(first, chips),
            first,
            lambda b, c=config: _compile(_with_batch(c, b, chips), args.topology, args.out, earlier),
            args.max_per_chip,
            known=_searched_rows(config, args.topology, chips, earlier),
        )
        print(
            f"largest per-chip batch that fits with remat={remat}: {fit} (global {fit * chips})", flush=True
        )
    return 0


# Above this share of HBM, XLA:TPU trades recomputation for memory on its own, so memory
# stops growing linearly with the batch (v5e: 37 per chip compiled to less than 30 did).
SATURATED = 0.9


def _next_trial(points: dict, hbm: int, fit: int, miss: int | None, cap: int) -> int:
    """The next per-chip batch to compile, strictly inside (fit, miss).

    ``points`` maps per-chip batch -> total bytes per chip (compiler refusals have none).
    While the largest fit uses less than ``SATURATED`` of ``hbm``, the trial is where the
    line through the two compiled points nearest the fit reaches ``hbm``, unless that is
    at or past a known miss. Otherwise the line says nothing: bisect towards a known miss,
    or probe half again beyond the fit. Without two points: double the fit.
    """
    upper = cap + 1 if miss is None else miss
    measured = sorted(points, key=lambda b: (abs(b - fit), b))[:2]
    trial = None
    if len(measured) == 2 and points.get(fit, 0) < SATURATED * hbm:
        (b0, m0), (b1, m1) = sorted((b, points[b]) for b in measured)
        slope = (m1 - m0) / (b1 - b0)
        line = int(b0 + (hbm - m0) / slope) if slope > 0 else None
        # A line that reaches HBM only at or past a known miss is a flattened one (XLA
        # rematerialising below SATURATED); following it would step down one batch a time.
        if line is not None and (miss is None or line < miss):
            trial = line
    if trial is None:
        if miss is not None:
            trial = (fit + miss) // 2
        elif fit in points and len(points) >= 2:
            trial = fit + max(1, fit // 2)
        else:
            trial = max(1, fit * 2)
    return min(max(trial, fit + 1), upper - 1)


def _largest_fit(per_chip: int, first: dict, compile_at, cap: int, known=None) -> int:
    """Largest per-chip batch that fits (0 if not even 1), from the config's own row and
    any ``known`` rows (per-chip batch -> row) compiled before."""
    points, hbm = {}, first.get("hbm_bytes")

    def record(b, row):
        if row.get("total_bytes") is not None:
            points[b] = row["total_bytes"]
        return bool(row.get("fits"))

    rows = {**(known or {}), per_chip: first}
    fits = [b for b in rows if record(b, rows[b])]
    fit = max(fits, default=0)
    miss = min((b for b in rows if b > fit and b not in fits), default=None)
    while (miss is None and fit < cap) or (miss is not None and miss - fit > 1):
        trial = _next_trial(points, hbm, fit, miss, cap) if hbm else max(1, fit * 2)
        if record(trial, compile_at(trial)):
            fit = trial
        else:
            miss = trial
    return fit


if __name__ == "__main__":
    sys.exit(main())
