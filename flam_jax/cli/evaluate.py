"""``flam-evaluate``: run a model over a standard benchmark and write metrics and plots.

    flam-evaluate --model EXPORT_DIR --benchmark desed --data-dir DIR [--out DIR]
    flam-evaluate --model EXPORT_DIR --suite paper --data-dir ROOT [--out DIR]

What each benchmark measures and how audio is windowed: ``evals.runner``. ``--suite``
runs every benchmark of the suite with a folder under ROOT (ROOT/desed, ROOT/audiocaps,
...) and prints one table beside the published numbers: ``evals.suite``.
"""

import os
import sys

from flam_jax.cli import EXIT_USAGE, ArgumentParser, report_errors
from flam_jax.errors import InputError
from flam_jax.evals.benchmarks import BENCHMARKS, get_benchmark
from flam_jax.evals.report import markdown_table
from flam_jax.evals.runner import evaluate
from flam_jax.evals.suite import SUITES, present_benchmarks, run_suite, suite_benchmarks
from flam_jax.evals.zeroshot import DEFAULT_TEMPLATE
from flam_jax.infer.api import FLAM, check_method


def _parse(argv):
    parser = ArgumentParser(prog="flam-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", required=True, help="export directory (flam-export / flam-convert-openflam)"
    )
    # Exactly one of --benchmark and --suite, checked in main: a one-line error, not argparse's usage.
    parser.add_argument("--benchmark", default=None, help="one of: " + ", ".join(sorted(BENCHMARKS)))
    parser.add_argument(
        "--suite", default=None, help="every benchmark of a suite in one table: " + ", ".join(SUITES)
    )
    parser.add_argument(
        "--data-dir",
        required=True,
        help="built TFDS data_dir, or the raw dataset folder; with --suite, a root of benchmark folders",
    )
    parser.add_argument(
        "--out", default=None, help="report folder (default: ./flam_eval/BENCHMARK or ./flam_eval/SUITE)"
    )
    parser.add_argument("--split", default=None, help="dataset split (default: the benchmark's test split)")
    parser.add_argument("--batch-size", type=int, default=8, help="10 s windows per model call")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help="zero-shot prompt template with {}")
    parser.add_argument("--mixtures", type=int, default=200, help="simulated: number of mixtures")
    parser.add_argument("--seed", type=int, default=0, help="simulated: mixture seed")
    parser.add_argument(
        "--method", default="unbiased", help="SED frame scores: unbiased, approximate or cosine (FLAM-Global)"
    )
    parser.add_argument(
        "--label-names", default=None, help="label to display-name file (default: AudioSet's, if in DATA_DIR)"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="where a raw folder is built (default: DATA_DIR/.flam_tfds)"
    )
    return parser.parse_args(argv)


@report_errors
def main(argv=None) -> int:
    args = _parse(argv)
    if (args.benchmark is None) == (args.suite is None):
        raise InputError("give exactly one of --benchmark and --suite")
    if args.suite is not None:
        return _suite(args)
    get_benchmark(args.benchmark)  # fail on a typo before loading the model
    check_method(args.method)
    model = FLAM.load(args.model)
    out = args.out or os.path.join("flam_eval", args.benchmark)
    result = evaluate(
        model,
        args.benchmark,
        args.data_dir,
        out_dir=out,
        split=args.split,
        batch_size=args.batch_size,
        template=args.template,
        mixtures=args.mixtures,
        seed=args.seed,
        cache_dir=args.cache_dir,
        label_file=args.label_names,
        progress=True,
        method=args.method,
    )
    print(markdown_table(result))
    print(f"report written to {out}")
    return 0


def _suite(args) -> int:
    suite_benchmarks(args.suite)  # fail on a typo before loading the model
    check_method(args.method)
    if args.split is not None:
        raise InputError("--split applies to one --benchmark; a suite uses each benchmark's test split")
    present_benchmarks(args.data_dir, args.suite)  # no data at all: say so before loading the model
    model = FLAM.load(args.model)
    out = args.out or os.path.join("flam_eval", args.suite)
    result = run_suite(
        model,
        args.data_dir,
        suite=args.suite,
        out_dir=out,
        batch_size=args.batch_size,
        template=args.template,
        cache_dir=args.cache_dir,
        label_file=args.label_names,
        progress=True,
        method=args.method,
        model_name=args.model,
        log=lambda line: print(line, file=sys.stderr),
    )
    print(result["markdown"])
    print(f"report written to {out}")
    failed = {name: r["error"] for name, r in result["benchmarks"].items() if r["status"] == "error"}
    for name, message in failed.items():  # after the table: the other benchmarks' numbers stand
        print(f"error: {name}: {message}", file=sys.stderr)
    return EXIT_USAGE if failed else 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
