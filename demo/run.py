"""``make demo``: build the demo corpus, train FLAM-Global, FLAM and its ablation, evaluate, detect.

    python -m demo [--workdir runs/demo] [--cache-dir ~/.cache/flam_jax] [--scale full|tiny]

An application of the repository (it runs ``data/demo_corpus.py`` and trains
``experiments/cpu_demo.py``), so it lives beside them rather than in the package.

The three models of the paper's two comparisons, trained on one corpus with one budget:
  global       FLAM-Global: the global contrastive loss only (``cpu_demo.py:global``, 450
               steps of 12 pairs); its frame scores are (1 + cos) / 2 of each projected
               frame with the text (``frame_scores(method="cosine")``);
  flam         FLAM, started from FLAM-Global's step 150 (the paper's initialisation), then
               300 steps of 8 mixtures + 4 pairs: the same clips through the audio tower;
  no_per_text  FLAM without per-text α, β, started there too (its heads left out).

Every stage reuses what an earlier run finished: the corpus (its built TFDS dataset), each
training run (its final checkpoint; an interrupted run resumes), each export and each
evaluation (kept while its export is unchanged). The detection example and the summary are
recomputed (seconds).

Held-out sets, simulated with the training recipe from recordings never trained on:
  seen     mixtures of validation recordings whose captions all occur in training;
  novel    mixtures of recordings whose captions never occur in training (the corpus's
           ``novel`` split plus validation recordings of unseen captions): open vocabulary,
           carried by the pretrained text tower;
  foreign  mixtures of the foreign package alone (``foreign`` split: its sounds over its
           own backgrounds, queried with its own freshly phrased captions): real sounds
           recorded elsewhere.
Backgrounds of the validation split serve seen and novel (background captions are not queried).
"""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import soundfile

from flam_jax import timeline
from flam_jax.cli import ArgumentParser, detect, report_errors
from flam_jax.config import load_experiment
from flam_jax.data import builders
from flam_jax.data.batches import normalise_caption
from flam_jax.data.index import record_captions, record_tags
from flam_jax.data.pools import RecordPool, is_background
from flam_jax.errors import DataError, InputError
from flam_jax.evals.benchmarks import get_benchmark
from flam_jax.evals.hook import simulate_mixtures
from flam_jax.evals.report import write_report
from flam_jax.evals.runner import run_simulated
from flam_jax.export.params import checkpoint_steps, export_workdir
from flam_jax.infer.api import FLAM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALES = {
    # scale: (experiment variant, mixtures per held-out set)
    "full": ("", 200),
    "tiny": ("tiny", 4),
}
SETS = ("seen", "novel", "foreign")
# name, label, cpu_demo variant, frame-score method; the first is the others' starting point
RUNS = (
    ("global", "FLAM-Global", "global", "cosine"),
    ("flam", "FLAM", "", "unbiased"),
    ("no_per_text", "FLAM without per-text α, β", "ablation", "unbiased"),
)
# The ablation replaces the per-text heads by shared terms: those start fresh.
HEADS = r"^(scale_head|bias_head)/"
# Which held-out sets a split's backgrounds serve (the foreign set keeps to its own package).
BACKGROUNDS_OF = {"validation": ("seen", "novel"), "foreign": ("foreign",)}


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


# --------------------------------------------------------------------------- corpus


def ensure_corpus(cache_dir: str, synthetic: bool) -> dict:
    """The demo corpus's summary; builds corpus + TFDS dataset unless both already exist,
    built by the current recipe (a corpus of an older recipe is rebuilt: the unpacked
    packages are kept, so that takes seconds, not a download)."""
    summary_path = os.path.join(cache_dir, "demo_corpus", "summary.json")
    recipe_path = os.path.join(cache_dir, "demo_corpus", "recipe.txt")
    data_dir = os.path.join(cache_dir, "tfds")
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        wanted = not synthetic or summary["source"] == "synthetic"
        try:
            builders.load("clips", data_dir, "train")
            built = True
        except DataError:
            built = False  # corpus present but its dataset is not: build both again
        current = _read_text(recipe_path) == corpus_recipe()
        if wanted and built and current:
            say(f"corpus: reusing {os.path.dirname(summary_path)} ({summary['source']})")
            _ensure_indexes(data_dir)
            return summary
        if wanted and built:
            say("corpus: built by another recipe (demo_corpus.py or demo_sounds.toml changed): rebuilding")
    cmd = [sys.executable, os.path.join(ROOT, "data", "demo_corpus.py"), "--cache-dir", cache_dir, "--build"]
    if synthetic:
        say("corpus: synthesising captioned events (--synthetic)")
        _run([*cmd, "--synthetic"], "building the synthetic demo corpus")
    else:
        say("corpus: building from Debian sound packages (about 3 GB of downloads, a few minutes)")
        try:
            _run(cmd, "building the demo corpus")
        except DataError as err:  # apt present but the archive unreachable, say
            say(f"corpus: {err}; falling back to synthesised captioned events")
            _run([*cmd, "--synthetic"], "building the synthetic demo corpus")
    with open(recipe_path, "w") as f:
        f.write(corpus_recipe())
    with open(summary_path) as f:
        return json.load(f)


def corpus_recipe() -> str:
    """What the corpus is built by: a digest of the corpus script and its caption tables."""
    digest = hashlib.sha256()
    for name in ("demo_corpus.py", "demo_sounds.toml"):
        with open(os.path.join(ROOT, "data", name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _ensure_indexes(data_dir: str) -> None:
    """A corpus built before builders wrote metadata indexes gets them now (seconds here)."""
    for split in builders.split_names("clips", data_dir):
        try:
            builders.open_index("clips", data_dir, split)
        except DataError as err:
            say(f"corpus: writing the metadata index of {split} ({err})")
            builders.write_index("clips", data_dir, split, progress=False)


# --------------------------------------------------------------------------- training


def experiment_spec(scale_variant: str, model_variant: str) -> str:
    parts = [p for p in (scale_variant, model_variant) if p]
    return os.path.join(ROOT, "experiments", "cpu_demo.py") + (":" + ",".join(parts) if parts else "")


def train(spec: str, workdir: str, data_dir: str, overrides: tuple[str, ...] = ()) -> int:
    """Train (or resume) ``spec`` in ``workdir``; returns the final step. A finished run is reused.

    ``overrides`` are ``--config.a.b=v`` flags (the FLAM-Global export to start from)."""
    return train_side_by_side({"run": (spec, workdir, overrides)}, data_dir)["run"]


def train_side_by_side(runs: dict[str, tuple[str, str, tuple[str, ...]]], data_dir: str) -> dict[str, int]:
    """Train (or resume) each ``name: (spec, workdir, overrides)`` at once; their final steps.

    Side by side because one small-model trainer leaves much of a 2-core machine idle (XLA's
    CPU ops of this size do not fill both cores): FLAM and its ablation together took 961 s
    where one after the other took 1,234 s, with the same losses (WORKSPACE.md)."""
    targets, commands = {}, {}
    for name, (spec, workdir, overrides) in runs.items():
        targets[name] = load_experiment(spec).train.steps
        done = checkpoint_steps(workdir) if os.path.isdir(workdir) else []
        if done and done[-1] >= targets[name]:
            say(f"training: reusing {workdir} (step {done[-1]})")
            continue
        resume = f", resuming at step {done[-1]}" if done else ""
        say(f"training {os.path.basename(spec)} in {workdir}{resume}")
        commands[name] = [
            sys.executable,
            "-m",
            "flam_jax.cli.train",
            f"--config={spec}",
            f"--workdir={workdir}",
            f"--config.data.dir={data_dir}",
            *overrides,
        ]
    codes = run_side_by_side(commands)
    failed = [f"{name} (exit {code})" for name, code in codes.items() if code != 0]
    if failed:
        raise DataError(f"training failed: {', '.join(failed)}; see the output above")
    steps = {}
    for name, (_, workdir, _) in runs.items():
        done = checkpoint_steps(workdir)
        if not done or done[-1] < targets[name]:
            raise DataError(
                f"training in {workdir} stopped before step {targets[name]} (rerun make demo to resume)"
            )
        steps[name] = done[-1]
    return steps


def run_side_by_side(commands: dict[str, list[str]]) -> dict[str, int]:
    """Run ``name: argv`` commands at once; their exit codes.

    With more than one, every output line is prefixed by ``[name]`` so the logs stay apart;
    one alone streams straight through (the trainer's progress line is the demo's)."""
    if len(commands) <= 1:
        return {
            name: subprocess.run(cmd, cwd=ROOT, env=_child_env(), check=False).returncode
            for name, cmd in commands.items()
        }
    procs, copiers = {}, []
    try:
        for name, cmd in commands.items():
            procs[name] = subprocess.Popen(
                cmd, cwd=ROOT, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            copier = threading.Thread(target=_copy_prefixed, args=(procs[name].stdout, f"[{name}] "))
            copier.start()
            copiers.append(copier)
        return {name: proc.wait() for name, proc in procs.items()}
    finally:
        # Interrupted (Ctrl-C, an error here): no trainer is left running unwatched.
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
        for copier in copiers:
            copier.join()


def _copy_prefixed(stream, prefix: str) -> None:
    with stream:
        for line in stream:
            print(prefix + line, end="", flush=True)


def export(workdir: str, out_dir: str, step: int) -> str:
    marker = os.path.join(out_dir, "config.json")
    if os.path.exists(marker) and os.path.getmtime(marker) >= _checkpoint_mtime(workdir, step):
        say(f"export: reusing {out_dir}")
        return out_dir
    export_workdir(workdir, out_dir, step=step)
    say(f"export: step {step} → {out_dir}")
    return out_dir


def _checkpoint_mtime(workdir: str, step: int) -> float:
    return os.path.getmtime(os.path.join(workdir, "checkpoints", str(step)))


def _run(cmd: list[str], what: str) -> None:
    # Output streams straight through: the trainer's progress line is the demo's.
    out = subprocess.run(cmd, cwd=ROOT, env=_child_env(), check=False)
    if out.returncode != 0:
        raise DataError(f"{what} failed (exit {out.returncode}); see the output above")


def _child_env() -> dict:
    # The test stack installs libtpu (compile-only checks); without a TPU it only prints
    # warnings, so the demo asks jax for the CPU unless the caller chose a platform.
    return dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))


# --------------------------------------------------------------------------- held-out sets


def _is_background(record) -> bool:
    return is_background(record_tags(record))


class Subset:
    """A read-only view of chosen records of several sources (the sequence RecordPool reads)."""

    def __init__(self, records: list[tuple[object, int]]):
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int):
        source, index = self._records[i]
        return source[index]


def held_out_sets(data_dir: str) -> dict[str, Subset]:
    """{"seen", "novel", "foreign"} over the corpus's validation, novel and foreign splits."""

    def captions(record) -> set[str]:
        return {normalise_caption(c) for c in record_captions(record)}

    train = builders.load("clips", data_dir, "train")
    trained = set().union(*(captions(train[i]) for i in range(len(train))))
    sets = {name: [] for name in SETS}
    recordings = dict.fromkeys(SETS, 0)  # non-background clips per set
    for split in ("validation", "novel", "foreign"):
        try:
            source = builders.load("clips", data_dir, split)
        except DataError:
            continue  # a corpus without this split (an older build)
        for i in range(len(source)):
            record = source[i]
            if _is_background(record):
                for name in BACKGROUNDS_OF.get(split, ()):
                    sets[name].append((source, i))
                continue
            own = captions(record)
            if split == "foreign":
                name = "foreign"
            else:
                name = "seen" if own <= trained else "novel" if not own & trained else None
            if name:
                sets[name].append((source, i))
                recordings[name] += 1
    for name, count in recordings.items():
        if count == 0:
            raise DataError(f"the demo corpus has no held-out recordings for the {name!r} set")
    return {name: Subset(records) for name, records in sets.items()}


# --------------------------------------------------------------------------- evaluation


@dataclasses.dataclass
class Row:
    run: str
    label: str
    set: str
    metrics: dict


def evaluate(
    export_dir: str, sets: dict[str, Subset], mixtures: int, out_dir: str, run: str, label: str, method: str
):
    """One row per held-out set; a report newer than the export, of as many mixtures, is reused."""
    exported = os.path.getmtime(os.path.join(export_dir, "config.json"))
    bench = get_benchmark("simulated")
    model, rows = None, []
    for name, source in sets.items():
        report = os.path.join(out_dir, name, "metrics.json")
        if os.path.exists(report) and os.path.getmtime(report) >= exported:
            with open(report) as f:
                metrics = json.load(f)["metrics"]
            if metrics.get("mixtures") == mixtures:
                rows.append(Row(run, label, name, metrics))
                say(f"evaluation: reusing {report}")
                continue
        model = model or FLAM.load(export_dir)
        metrics, curves, examples = run_simulated(model, source, bench, 8, False, mixtures, 0, method)
        result = {"benchmark": f"demo-{name}", "split": name, "task": bench.task, "metrics": metrics}
        write_report(os.path.join(out_dir, name), result, curves, examples)
        rows.append(Row(run, label, name, metrics))
        say(f"evaluated {label} on {name}: frame AUROC {metrics['frame_auroc']:.3f}")
    return rows


def detection_example(export_dir: str, source: Subset, out_dir: str, novel_query: str) -> dict:
    """Simulate one held-out mixture, run flam-detect on it and write its PNG and JSON."""
    pool = RecordPool.from_records(source)
    candidates = simulate_mixtures(pool, 16, seed=7)
    # Three sounds make a readable picture (ten rows of scores do not).
    mixture = min(candidates, key=lambda m: abs(len(set(m.captions)) - 3))
    os.makedirs(out_dir, exist_ok=True)
    wav = os.path.join(out_dir, "mixture.wav")
    soundfile.write(wav, mixture.audio, timeline.SAMPLE_RATE)
    frame_s = timeline.WINDOW_S / mixture.labels.shape[1]
    # One entry per active run of frames (fragments and repeats are several).
    truth = [
        {"caption": mixture.captions[row], "onset_s": onset, "offset_s": offset}
        for row, onset, offset in timeline.run_times(mixture.labels, frame_s)
    ]
    truth.sort(key=lambda e: e["onset_s"])
    queries = list(dict.fromkeys(mixture.captions))
    if novel_query and novel_query not in queries:
        queries.append(novel_query)  # a sound that is not there: it should stay low
    with open(os.path.join(out_dir, "truth.json"), "w") as f:
        json.dump({"events": truth, "frame_s": frame_s}, f, indent=1)
    argv = [wav, "--model", export_dir, "--plot", os.path.join(out_dir, "detection.png")]
    argv += ["--json", os.path.join(out_dir, "detection.json")]
    for q in queries:
        argv += ["-q", q]
    say("flam-detect " + " ".join(_quote(a) for a in argv))
    if detect.main(argv) != 0:
        raise InputError("flam-detect failed on the demo mixture")
    return {"wav": wav, "queries": queries, "png": os.path.join(out_dir, "detection.png")}


def _quote(arg: str) -> str:
    return f"'{arg}'" if " " in arg else arg


# --------------------------------------------------------------------------- summary

COLUMNS = (
    ("frame AUROC", "frame_auroc_micro"),
    ("PSDS1", "psds1"),
    ("frame F1@0.5", "frame_f1_macro_at_0.5"),
    ("best frame F1", "best_frame_f1_macro"),
    ("at threshold", "best_frame_f1_threshold"),
)


def summary_table(rows: list[Row]) -> str:
    head = "| held-out set | model | " + " | ".join(c for c, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for row in rows:
        values = [row.metrics.get(key, float("nan")) for _, key in COLUMNS]
        cells = " | ".join(f"{v:.3f}" for v in values)
        lines.append(f"| {row.set} ({row.metrics['clips']} mixtures) | {row.label} | {cells} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def run_demo(workdir: str, cache_dir: str, scale: str, synthetic: bool = False, runs: str = "") -> dict:
    """The demo; ``runs`` ("flam,global", say) limits the models (FLAM-Global, their start, always)."""
    if scale not in SCALES:
        raise InputError(f"unknown scale {scale!r} (use {' or '.join(SCALES)})")
    wanted = _runs(runs)
    variant, mixtures = SCALES[scale]
    clock = {"start": time.time()}
    summary = ensure_corpus(cache_dir, synthetic)
    data_dir = os.path.join(cache_dir, "tfds")
    clock["corpus"] = time.time()
    _claim_workdir(workdir, summary["source"])
    exports = {}
    (first_name, _, first_variant, _), followers = wanted[0], wanted[1:]
    first_dir, first_spec = os.path.join(workdir, first_name), experiment_spec(variant, first_variant)
    step = train(first_spec, first_dir, data_dir)
    exports[first_name] = export(first_dir, os.path.join(first_dir, "export"), step)
    # The others start from FLAM-Global's first kept checkpoint (cpu_demo.py:global).
    kept = min(step, load_experiment(first_spec).train.ckpt_every)
    start = export(first_dir, os.path.join(first_dir, f"export-{kept}"), kept)
    clock[f"train_{first_name}"] = time.time()
    runs = {
        name: (
            experiment_spec(variant, model_variant),
            os.path.join(workdir, name),
            start_from(start, model_variant),
        )
        for name, _, model_variant, _ in followers
    }
    for name, step in train_side_by_side(runs, data_dir).items():
        exports[name] = export(runs[name][1], os.path.join(runs[name][1], "export"), step)
    clock["train_" + "+".join(runs)] = time.time()
    sets = held_out_sets(data_dir)
    rows = []
    for name, label, _, method in wanted:
        out = os.path.join(workdir, "eval", name)
        rows += evaluate(exports[name], sets, mixtures, out, name, label, method)
    clock["evaluate"] = time.time()
    # A foreign-set mixture: what the demo is for (sounds recorded elsewhere, fresh words).
    novel = _first_caption(sets["novel"])
    shown = exports.get("flam", exports[wanted[-1][0]])
    example = detection_example(shown, sets["foreign"], os.path.join(workdir, "detect"), novel)
    clock["detect"] = time.time()
    table = summary_table(rows)
    result = {
        "corpus": summary.get("source", ""),
        "scale": scale,
        "rows": [dataclasses.asdict(r) for r in rows],
        "detection": example,
        "exports": exports,
        "seconds": {k: round(v - clock["start"], 1) for k, v in clock.items() if k != "start"},
    }
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(result, f, indent=1, default=float)
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(table + "\n")
    print()
    print(f"corpus: {result['corpus']}   total {result['seconds']['detect']:.0f} s")
    print(table)
    print("\nwrote:")
    for path in (
        *exports.values(),
        os.path.join(workdir, "eval"),
        example["png"],
        os.path.join(workdir, "summary.md"),
        os.path.join(workdir, "summary.json"),
    ):
        print(f"  {path}")
    return result


def _runs(names: str) -> list[tuple]:
    chosen = {n for n in names.split(",") if n} or {r[0] for r in RUNS}
    unknown = chosen - {r[0] for r in RUNS}
    if unknown:
        raise InputError(f"unknown run {sorted(unknown)[0]!r} (use {', '.join(r[0] for r in RUNS)})")
    return [r for r in RUNS if r[0] in chosen or r is RUNS[0]]


def start_from(global_export: str, model_variant: str) -> tuple[str, ...]:
    """Flags that start a FLAM run from the FLAM-Global export, text tower included."""
    flags = [
        f"--config.train.init_from={global_export}",
        "--config.model.text_weights=",
        f"--config.model.tokenizer={os.path.join(global_export, 'tokenizer')}",
    ]
    if model_variant == "ablation":
        flags.append(f"--config.train.init_exclude={HEADS}")
    return tuple(flags)


def _claim_workdir(workdir: str, corpus: str) -> None:
    """Runs trained on one corpus (its sources and recipe) are never reused with another."""
    path = os.path.join(workdir, "corpus.json")
    claim = {"source": corpus, "recipe": corpus_recipe()}
    if os.path.exists(path):
        with open(path) as f:
            trained_on = json.load(f)
        if trained_on.get("source") != corpus:
            raise InputError(
                f"{workdir} holds runs trained on the {trained_on.get('source')} corpus, not {corpus}: "
                "use another --workdir or delete it"
            )
        if trained_on.get("recipe") != claim["recipe"]:
            raise InputError(
                f"{workdir} holds runs trained on the corpus of an older demo recipe: "
                "use another --workdir or delete it"
            )
        return
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(claim, f)


def _first_caption(source: Subset) -> str:
    for i in range(len(source)):
        record = source[i]
        if not _is_background(record):
            return record_captions(record)[0]
    return ""


@report_errors
def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m demo", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="runs/demo", help="where runs, exports and reports go")
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/flam_jax"), help="corpus cache")
    p.add_argument("--scale", default="full", help="full (the demo) or tiny (a few steps, for CI)")
    p.add_argument("--synthetic", action="store_true", help="synthesised events instead of Debian packages")
    p.add_argument(
        "--runs", default="", help="only these models, e.g. flam (FLAM-Global, their start, always)"
    )
    args = p.parse_args(argv)
    run_demo(args.workdir, args.cache_dir, args.scale, args.synthetic, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
