"""WORKSPACE.md names only paths that exist: it is the map, and a dead path on it misleads.

A token in backticks (inline code or a fenced block) that looks like a repository path, one
holding a "/" or ending in .py, .md, .txt or .toml, must exist relative to the repository
root, to ``flam_jax/`` or to one of the package folders (so ``sed/`` or ``htsat.py`` may be
named short). Tokens that are clearly not repository paths are left alone: URLs and
``gs://`` paths; home, absolute and parent-relative paths; run and virtualenv folders; and
placeholders (``WORKDIR/...``, ``<step>``, ``X.py``, globs, quoted strings).
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKSPACE = ROOT / "WORKSPACE.md"

PATH_ENDINGS = (".py", ".md", ".txt", ".toml")
OUTSIDE_REPO = ("~", "/", "..", "$", "runs/", ".venv/")  # caches, run folders, build output
PLACEHOLDER_MARKS = set("<>[]*?…\"'|")  # <step>, kind[/config], globs, quoted strings
ALL_CAPS = re.compile(r"[A-Z][A-Z0-9_]*")  # WORKDIR, EXPORT_DIR, INDEX: a folder to fill in
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
SPAN = re.compile(r"`([^`\n]+)`")
BRACES = re.compile(r"\{([^{}]*)\}")


def code_tokens(markdown: str) -> list[str]:
    """Whitespace-separated tokens of every fenced block and every inline code span."""
    blocks = FENCE.findall(markdown)
    prose = FENCE.sub("", markdown)
    return [tok for chunk in [*blocks, *SPAN.findall(prose)] for tok in chunk.split()]


def as_path(token: str) -> str | None:
    """The repository path a token names, or None when it names none."""
    token = token.strip(",;()")
    if "=" in token:  # --flag=value
        token = token.split("=", 1)[1]
    if "://" in token:
        return None
    token = token.split(":", 1)[0]  # experiments/cpu_demo.py:tiny
    if not ("/" in token or token.endswith(PATH_ENDINGS)):
        return None
    if token.startswith(OUTSIDE_REPO) or PLACEHOLDER_MARKS & set(token):
        return None
    for part in token.strip("/").split("/"):
        stem = part.split(".")[0]
        if ("." not in part and ALL_CAPS.fullmatch(part)) or (len(stem) == 1 and stem.isupper()):
            return None  # WORKDIR/..., X.py, F.png
    return token


def expand(path: str) -> list[str]:
    """``infer/{api,search}.py`` → both paths (one brace group at a time)."""
    match = BRACES.search(path)
    if not match:
        return [path]
    head, tail = path[: match.start()], path[match.end() :]
    return [p for option in match.group(1).split(",") for p in expand(head + option + tail)]


def named_paths(markdown: str) -> list[str]:
    found = (as_path(token) for token in code_tokens(markdown))
    return sorted({p for path in found if path for p in expand(path)})


def search_roots() -> list[pathlib.Path]:
    package = ROOT / "flam_jax"
    folders = sorted(init.parent for init in package.rglob("__init__.py") if init.parent != package)
    return [ROOT, package, *folders]


def exists(path: str, roots: list[pathlib.Path]) -> bool:
    want_dir = path.endswith("/")
    for root in roots:
        target = root / path.rstrip("/")
        if target.is_dir() if want_dir else target.exists():
            return True
    return False


def missing_paths(markdown: str) -> list[str]:
    roots = search_roots()
    return [p for p in named_paths(markdown) if not exists(p, roots)]


def test_every_path_workspace_names_exists():
    text = WORKSPACE.read_text(encoding="utf-8")
    assert len(named_paths(text)) > 50  # the scan found the map's paths
    assert missing_paths(text) == []


@pytest.mark.parametrize(
    "markdown, missing",
    [
        ("see `flam_jax/no_such_module.py`", ["flam_jax/no_such_module.py"]),
        ("the `evals/nosuch/` package", ["evals/nosuch/"]),
        ("`timeline.py/` is a file, not a folder", ["timeline.py/"]),
        ("```\npython benchmarks/gone.py --fast\n```", ["benchmarks/gone.py"]),
        ("`flam-train --config=experiments/nope.py:tiny`", ["experiments/nope.py"]),
        ("`infer/{api,windows}.py`", ["infer/windows.py"]),
        ("`GONE.md` at the top", ["GONE.md"]),
    ],
)
def test_a_dead_path_is_reported(markdown, missing):
    assert missing_paths(markdown) == missing


@pytest.mark.parametrize(
    "markdown",
    [
        "`flam_jax/timeline.py`, `tests/test_layering.py`, `experiments/cpu_demo.py:tiny,ablation`",
        "`sed/`, `htsat.py`, `cli/train.py`, `builders/`, `evals/sed/`, `.ci/run`, `__init__.py`",
        "`gs://bucket/run/config.json`, `https://example.com/a/b.md`, `~/.cache/flam_jax/tfds`",
        "`/tmp/openflam`, `/dev/shm`, `../shared/DESIGN.md`, `runs/demo/flam`, `.venv/bin/python`",
        "`WORKDIR/config.json`, `EXPORT_DIR/stablehlo/`, `INDEX/items/<n>.npz`, `checkpoints/<step>/state`",
        '`experiments/X.py[:variant]`, `benchmarks/<name>.py`, `tests/test_data_*.py`, `"a/b"`',
        "`model.remat`, `flam-train --workdir=DIR`, `python -m flam_jax.cli.X`, `v5e:16x16`",
    ],
)
def test_real_and_non_repository_paths_pass(markdown):
    assert missing_paths(markdown) == []
