"""Build the demo corpus: real recordings from Debian data packages, captioned and split.

    python data/demo_corpus.py [--cache-dir=~/.cache/flam_jax] [--build] [--synthetic]

1. ``apt-get download PKG`` into CACHE/debs, then only its sounds and copyright file are
   unpacked into CACHE/unpacked/PKG (no root install; nothing lands in the repository; the
   .deb is deleted). Sizes are checked against each package's limit and printed before a
   download (about 3 GB in all, 0ad-data and flightgear-data-base being 1.3 GB each).
2. Every audio file (and every sound inside openttd-opensfx's ``.cat``) whose key matches
   a rule of its package's table in ``data/demo_sounds.toml`` becomes a clip with 2–8 word
   captions, tags ("ambiance" marks backgrounds) and a licence from the package's Debian
   copyright file (or, for OpenSFX, from the title stored next to each sound).
3. Splits are by original recording: sounds cut from one recording share a group, and a
   group goes wholly to ``train`` or ``validation`` (by a hash, ~15%). Rules marked novel
   form the ``novel`` split: sound classes and captions never seen in training, for
   open-vocabulary evaluation. The foreign package (flightgear-data-base) is held out
   whole as the ``foreign`` split: sounds recorded elsewhere, captioned in words no
   training clip uses.
4. Writes CACHE/demo_corpus/{manifest.jsonl, licences.csv, unseen_captions.txt,
   summary.json, audio/} (the ``clips`` builder's manual directory) and, with ``--build``,
   the TFDS dataset in CACHE/tfds.

Without apt (or with ``--synthetic``) it says so and writes procedurally synthesised
captioned events instead, so the demo still runs.

Reserved for independent evaluation and never used here: tuxpaint-stamps-default,
wesnoth-*, widelands-data, supertuxkart-data. megaglest-data and freedink-data are not used
either: they ship copies of recordings from the reserved packages.
"""

import argparse
import collections
import concurrent.futures
import csv
import dataclasses
import fnmatch
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile

import numpy as np

from flam_jax.cli import report_errors
from flam_jax.errors import DataError

RESERVED = ("tuxpaint-stamps-default", "wesnoth-*", "widelands-data", "supertuxkart-data")
COPIES_OF_RESERVED = ("megaglest-data", "freedink-data")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga")
VALIDATION_PERCENT = 15
SOUNDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_sounds.toml")


@dataclasses.dataclass(frozen=True)
class Package:
    """Where a Debian package keeps its sounds and how its clips are keyed for the rules."""

    name: str
    rules: str  # its rule table in demo_sounds.toml
    max_mib: int = 60  # refuse a bigger download
    keys: str = "stem"  # "stem": file stems; "path": paths below ``base`` without the extension
    base: str = ""  # the folder whose files are taken ("" = the whole package)
    archive: str = ""  # a zip in the package whose audio members are unpacked beside it
    skip: str = ""  # regex of paths below ``base`` never taken (music, voice packs)
    foreign: bool = False  # held out whole: its own split, never trained on


PACKAGES = (
    Package("openttd-opensfx", "common"),
    Package("sonic-pi-samples", "common"),
    Package("minetest-data", "common"),
    Package("sound-theme-freedesktop", "common"),
    Package("lmms-common", "common"),
    # public.zip (3.3 GB unpacked) is opened only for its audio/ folder, then deleted.
    Package(
        "0ad-data",
        "0ad",
        max_mib=1400,
        keys="path",
        base="usr/share/games/0ad/mods/public/audio",
        archive="usr/share/games/0ad/mods/public/public.zip",
        skip=r"^music/",
    ),
    Package(
        "hedgewars-data",
        "hedgewars",
        max_mib=160,
        base="usr/share/games/hedgewars/Data/Sounds",
        skip=r"^voices/",
    ),
    Package("lincity-ng-data", "lincity", base="usr/share/games/lincity-ng/sounds"),
    Package("hydrogen-drumkits", "hydrogen", max_mib=160, base="usr/share/hydrogen/data/drumkits"),
    Package(
        "flightgear-data-base",
        "flightgear",
        max_mib=1400,
        keys="path",
        base="usr/share/games/flightgear",
        foreign=True,
    ),
)
DEFAULT_PACKAGES = tuple(p.name for p in PACKAGES)
SPLITS = ("train", "validation", "novel", "foreign")


@dataclasses.dataclass(frozen=True)
class Rule:
    pattern: str  # regex searched in the clip key, case-insensitive
    captions: tuple[str, ...]
    tags: tuple[str, ...] = ()
    novel: bool = False  # the whole class is held out of training
    limit: int = 0  # at most this many clips of the rule per package (0: all)


AMB = ("ambiance",)


def load_rules(path: str = SOUNDS) -> dict[str, tuple[Rule, ...]]:
    """The rule tables of demo_sounds.toml, by name."""
    with open(path, "rb") as f:
        tables = tomllib.load(f)
    return {
        name: tuple(
            Rule(
                r["match"],
                tuple(r["captions"]),
                AMB if r.get("background") else (),
                bool(r.get("novel")),
                int(r.get("limit", 0)),
            )
            for r in rules
        )
        for name, rules in tables.items()
    }


RULE_TABLES = load_rules()
RULES = RULE_TABLES["common"]
PACKAGE = {p.name: p for p in PACKAGES}


@dataclasses.dataclass
class RawClip:
    package: str
    key: str  # what the rules see
    name: str  # output file name (unique within the package)
    group: str  # original recording, for the split
    licence: str
    data: bytes | None = None  # sounds extracted from an archive
    path: str | None = None  # or a file on disk
    foreign: bool = False  # from the held-out package


def check_allowed(package: str) -> None:
    for reserved in RESERVED:
        if fnmatch.fnmatch(package, reserved):
            raise DataError(f"package {package} is reserved for independent evaluation")
    if package in COPIES_OF_RESERVED:
        raise DataError(f"package {package} ships copies of recordings reserved for independent evaluation")


def match_rule(key: str, rules=RULES) -> Rule | None:
    for rule in rules:
        if re.search(rule.pattern, key, flags=re.IGNORECASE):
            return rule
    return None


def split_for(group: str, rule: Rule, validation_percent: int = VALIDATION_PERCENT, foreign=False) -> str:
    if foreign:
        return "foreign"
    if rule.novel:
        return "novel"
    bucket = int.from_bytes(hashlib.sha256(group.encode()).digest()[:4], "little") % 100
    return "validation" if bucket < validation_percent else "train"


# --- licences ------------------------------------------------------------------------


def parse_copyright(path: str) -> list[tuple[list[str], str]]:
    """(Files patterns, License) stanzas of a DEP-5 copyright file, in order."""
    if not os.path.isfile(path):
        return []
    stanzas, files = [], None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("Files:"):
                files = line[len("Files:") :].split()
            elif line.startswith("License:") and files is not None:
                stanzas.append((files, line[len("License:") :].strip()))
                files = None
    return stanzas


def licence_for(relpath: str, stanzas) -> str:
    """The last stanza whose pattern matches a tail of the installed path (DEP-5: last wins)."""
    parts = relpath.split("/")
    tails = ["/".join(parts[k:]) for k in range(len(parts))]
    found = "see the package's copyright file"
    for patterns, licence in stanzas:
        if any(fnmatch.fnmatch(tail, p) for p in patterns for tail in tails):
            found = licence
    return found


# --- collecting clips from unpacked packages ------------------------------------------------


def opensfx_clips(cat_path: str) -> list[RawClip]:
    """Sounds of OpenTTD's opensfx.cat: an offset table, then (title, RIFF WAV) records."""
    blob = open(cat_path, "rb").read()
    count = (struct.unpack_from("<I", blob, 0)[0] & 0x7FFFFFFF) // 8
    out = []
    for i in range(count):
        offset, size = struct.unpack_from("<II", blob, 8 * i)
        offset &= 0x7FFFFFFF
        name_length = blob[offset]
        text = blob[offset + 1 : offset + 1 + name_length].rstrip(b"\0").decode("utf-8", "replace")
        wav = blob[offset + 1 + name_length : offset + size]
        title_match = re.match(r'"([^"]+)"', text)
        title = title_match.group(1) if title_match else text
        licence_match = re.search(r"License:\s*([^.]+(?:\.\d+)?[^.]*)", text)
        original = re.search(r'Original "([^"]+)"', text)
        out.append(
            RawClip(
                package="openttd-opensfx",
                key=title,
                name=f"{i:02d}.wav",
                group=f"opensfx:{original.group(1) if original else title}",
                licence=(licence_match.group(1).strip() if licence_match else "CC-BY-SA-3.0")
                + f" (OpenSFX; {text})",
                data=wav,
            )
        )
    return out


def file_clips(package: str, root: str) -> list[RawClip]:
    spec = PACKAGE.get(package, Package(package, "common"))
    docs = os.path.join(root, "usr", "share", "doc", package, "copyright")
    stanzas = parse_copyright(docs)
    base = os.path.join(root, spec.base)
    out = []
    for folder, _, files in sorted(os.walk(base)):
        for file in sorted(files):
            stem, ext = os.path.splitext(file)
            if ext.lower() not in AUDIO_EXTENSIONS:
                continue
            path = os.path.join(folder, file)
            below = os.path.relpath(path, base)
            if spec.skip and re.search(spec.skip, below):
                continue
            key = os.path.splitext(below)[0] if spec.keys == "path" else stem
            # "env_sounds_water.3" and "bassdrum03" are takes of one recording.
            group = re.sub(r"[._-]?\d+$", "", key)
            rel = os.path.relpath(path, root)
            name = rel.replace("/", "__")
            out.append(
                RawClip(
                    package,
                    key,
                    name,
                    f"{package}:{group}",
                    licence_for(rel, stanzas),
                    path=path,
                    foreign=spec.foreign,
                )
            )
    return out


def collect(unpacked: dict[str, str]) -> list[RawClip]:
    clips = []
    for package, root in sorted(unpacked.items()):
        check_allowed(package)
        cats = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".cat")]
        for cat in cats:
            clips.extend(opensfx_clips(cat))
        clips.extend(file_clips(package, root))
    return clips


def rules_of(package: str) -> tuple[Rule, ...]:
    return RULE_TABLES[PACKAGE[package].rules] if package in PACKAGE else RULES


def captioned(clips: list[RawClip], rules=None) -> tuple[list[tuple[RawClip, Rule]], int]:
    """(clip, rule) for every clip a rule captions, at most ``limit`` per rule and package.

    ``rules`` overrides the package tables (the synthetic corpus). Returns also how many
    clips were skipped: no rule, an empty placeholder sound, or over a rule's limit.
    """
    kept, by_rule = [], {}
    for clip in clips:
        rule = match_rule(clip.key, rules or rules_of(clip.package))
        if rule is None or (clip.data is not None and len(clip.data) < 1000):
            continue
        by_rule.setdefault((clip.package, rule), []).append(clip)
    for (_, rule), members in by_rule.items():
        if rule.limit:  # a hash order, so the choice is stable and spread over recordings
            members = sorted(members, key=lambda c: hashlib.sha256(c.name.encode()).digest())[: rule.limit]
        kept.extend((clip, rule) for clip in members)
    order = {id(c): i for i, c in enumerate(clips)}
    kept.sort(key=lambda pair: order[id(pair[0])])
    return kept, len(clips) - len(kept)


def write_corpus(clips: list[RawClip], out_dir: str, source_note: str, rules=None) -> dict:
    """Copy captioned clips to OUT/audio and write the manifest, licences and unseen captions."""
    audio_dir = os.path.join(out_dir, "audio")
    shutil.rmtree(audio_dir, ignore_errors=True)
    os.makedirs(audio_dir)
    entries = []
    kept, skipped = captioned(clips, rules)
    for clip, rule in kept:
        rel = os.path.join("audio", clip.package, clip.name)
        os.makedirs(os.path.join(out_dir, "audio", clip.package), exist_ok=True)
        if clip.data is not None:
            with open(os.path.join(out_dir, rel), "wb") as f:
                f.write(clip.data)
        else:
            shutil.copyfile(clip.path, os.path.join(out_dir, rel))
        entries.append(
            {
                "path": rel,
                "captions": list(rule.captions),
                "tags": list(rule.tags),
                "source": f"debian:{clip.package}" if clip.package != "synthetic" else "synthetic",
                "licence": clip.licence,
                "recording": clip.group,
                "split": split_for(clip.group, rule, foreign=clip.foreign),
                "key": clip.key,
            }
        )
    if not entries:
        raise DataError("demo corpus: no clip matched a caption rule")
    with open(os.path.join(out_dir, "manifest.jsonl"), "w", encoding="utf-8") as f:
        for entry in entries:
            f.write(json.dumps(entry) + "\n")
    with open(os.path.join(out_dir, "licences.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "source", "recording", "licence"])
        for entry in entries:
            writer.writerow([entry["path"], entry["source"], entry["recording"], entry["licence"]])
    train_captions = {c for e in entries if e["split"] == "train" for c in e["captions"]}
    unseen = sorted({c for e in entries if e["split"] != "train" for c in e["captions"]} - train_captions)
    with open(os.path.join(out_dir, "unseen_captions.txt"), "w", encoding="utf-8") as f:
        f.write("".join(c + "\n" for c in unseen))
    counts = {s: sum(e["split"] == s for e in entries) for s in SPLITS}
    summary = {
        "clips": len(entries),
        "skipped": skipped,
        "splits": counts,
        "backgrounds": sum("ambiance" in e["tags"] for e in entries),
        "unseen_captions": len(unseen),
        "packages": dict(sorted(collections.Counter(e["source"] for e in entries).items())),
        # The foreign set asks in new words: this stays 0 (tests/test_data_scripts.py).
        "foreign_captions_in_training": len(
            {c for e in entries if e["split"] == "foreign" for c in e["captions"]} & train_captions
        ),
        "source": source_note,
    }
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


# --- fetching ----------------------------------------------------------------------


def apt_available() -> bool:
    return shutil.which("apt-get") is not None and shutil.which("dpkg") is not None


def package_size(package: str) -> int:
    out = subprocess.run(["apt-cache", "show", package], capture_output=True, text=True, check=False)
    sizes = re.findall(r"^Size:\s*(\d+)", out.stdout, flags=re.MULTILINE)
    if out.returncode or not sizes:
        raise DataError(f"apt-cache knows no package {package} (run apt-get update?)")
    return int(sizes[0])


def _run(command: list[str], cwd: str | None = None) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"{' '.join(command[:2])} failed: {last}")


def fetch(packages, cache_dir: str) -> dict[str, str]:
    """Download and unpack each package (its sounds and copyright only) unless already unpacked."""
    debs, unpacked_root = os.path.join(cache_dir, "debs"), os.path.join(cache_dir, "unpacked")
    os.makedirs(debs, exist_ok=True)
    out, todo = {}, []
    for package in packages:
        check_allowed(package)
        spec = PACKAGE.get(package, Package(package, "common"))
        target = os.path.join(unpacked_root, package)
        out[package] = target
        if os.path.isdir(target):
            continue
        size = package_size(package)
        if size > spec.max_mib * 2**20:
            raise DataError(
                f"package {package} is {size / 2**20:.0f} MiB, over its limit of {spec.max_mib} MiB"
            )
        deb = _deb(debs, package)
        if deb is None:
            print(f"downloading {package} ({size / 2**20:.1f} MiB)", flush=True)
            _run(["apt-get", "download", package], cwd=debs)
            deb = _deb(debs, package)
        if deb is None:
            raise DataError(f"apt-get download {package} produced no .deb")
        todo.append((deb, target, spec))
    # Unpacking is xz decompression, one core per package: two at a time.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda job: unpack(*job), todo))
    return out


def _deb(debs: str, package: str) -> str | None:
    found = sorted(f for f in os.listdir(debs) if f.startswith(package + "_") and f.endswith(".deb"))
    return os.path.join(debs, found[-1]) if found else None


def _wanted(name: str, spec: Package) -> bool:
    name = name.lstrip("./")
    return (
        name.lower().endswith((*AUDIO_EXTENSIONS, ".cat"))
        or name == f"usr/share/doc/{spec.name}/copyright"
        or (bool(spec.archive) and name == spec.archive)
    )


def unpack(deb: str, target: str, spec: Package) -> None:
    """The package's sounds, copyright and sound archive into ``target``; then the .deb goes.

    A zip ``spec.archive`` is opened for the audio below ``spec.base`` and deleted, so the
    cache keeps only sounds (0ad's public.zip is 3.3 GB, its audio 60 MB).
    """
    print(f"unpacking the sounds of {spec.name}", flush=True)
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    proc = subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if member.isfile() and _wanted(member.name, spec):
                    tar.extract(member, partial, filter="data")
    except tarfile.TarError as err:
        raise DataError(
            f"{os.path.basename(deb)} is not a readable package ({err}); delete it and rerun"
        ) from None
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait():
            raise DataError(f"dpkg-deb could not read {os.path.basename(deb)}: {err.splitlines()[-1:]}")
    if spec.archive:
        archive = os.path.join(partial, spec.archive)
        base = os.path.join(partial, spec.base)
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                below = os.path.relpath(os.path.join(os.path.dirname(archive), name), base)
                if below.startswith("..") or not name.lower().endswith(AUDIO_EXTENSIONS):
                    continue
                if not (spec.skip and re.search(spec.skip, below)):
                    z.extract(name, os.path.dirname(archive))
        os.remove(archive)
    os.replace(partial, target)  # a crash mid-unpack leaves no half tree
    os.remove(deb)


# --- fallback: synthesised events -----------------------------------------------------------

SYNTHETIC = (
    ("a high pitched beep", "beep"),
    ("a low hum", "hum"),
    ("a rising whistle", "chirp_up"),
    ("a falling whistle", "chirp_down"),
    ("a bell ringing", "bell"),
    ("rapid knocking", "knock"),
    ("a burst of noise", "burst"),
    ("steady rain", "rain"),
)
# The fallback's foreign package: known kinds under new captions, over their own background.
SYNTHETIC_FOREIGN = (
    ("an electronic tone", "beep"),
    ("a whistle sliding upwards", "chirp_up"),
    ("a light drizzle", "rain"),
)


def synthesise(kind: str, rng: np.random.Generator, rate: int = 48_000) -> np.ndarray:
    seconds = {"hum": 4.0, "rain": 12.0}.get(kind, rng.uniform(0.3, 2.0))
    t = np.arange(int(seconds * rate)) / rate
    if kind == "beep":
        wave = np.sin(2 * np.pi * rng.uniform(1500, 3000) * t)
    elif kind == "hum":
        wave = np.sin(2 * np.pi * rng.uniform(50, 120) * t) + 0.3 * np.sin(2 * np.pi * 180 * t)
    elif kind in ("chirp_up", "chirp_down"):
        f0, f1 = sorted(rng.uniform(400, 4000, 2))
        f0, f1 = (f0, f1) if kind == "chirp_up" else (f1, f0)
        wave = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
    elif kind == "bell":
        f = rng.uniform(400, 900)
        wave = sum(np.sin(2 * np.pi * f * r * t) / r for r in (1, 2.76, 5.4)) * np.exp(-3 * t)
    elif kind == "knock":
        wave = np.zeros_like(t)
        for start in np.arange(0.05, seconds - 0.05, rng.uniform(0.12, 0.25)):
            n = int(start * rate)
            wave[n : n + 800] += rng.standard_normal(min(800, len(t) - n)) * np.exp(
                -np.arange(800)[: len(t) - n] / 100
            )
    elif kind == "burst":
        wave = rng.standard_normal(len(t)) * np.exp(-4 * t / seconds)
    else:  # rain: filtered noise
        wave = np.convolve(rng.standard_normal(len(t)), np.ones(8) / 8, mode="same")
    wave = wave / (np.abs(wave).max() + 1e-9) * 0.5
    return wave.astype(np.float32)


def synthetic_clips(out_dir: str, per_kind: int = 25, seed: int = 0) -> list[RawClip]:
    import soundfile

    rng = np.random.default_rng(seed)
    folder = os.path.join(out_dir, "synth_src")
    os.makedirs(folder, exist_ok=True)
    clips = []
    kinds = [(c, k, False) for c, k in SYNTHETIC] + [(c, k, True) for c, k in SYNTHETIC_FOREIGN]
    for caption, kind, foreign in kinds:
        stem = f"foreign_{kind}" if foreign else kind
        for k in range(per_kind):
            path = os.path.join(folder, f"{stem}_{k:02d}.wav")
            soundfile.write(path, synthesise(kind, rng), 48_000)
            name, group = f"{stem}_{k:02d}.wav", f"synthetic:{stem}:{k}"
            clips.append(RawClip("synthetic", caption, name, group, "CC0", path=path, foreign=foreign))
    return clips


# Two kinds are held out as in the real corpus, so the fallback also has a novel split.
SYNTHETIC_NOVEL = ("bell", "knock")
SYNTHETIC_RULES = tuple(
    Rule(
        "^" + re.escape(caption) + "$",
        (caption,),
        AMB if kind in ("rain", "hum") else (),
        novel=kind in SYNTHETIC_NOVEL,
    )
    for caption, kind in SYNTHETIC + SYNTHETIC_FOREIGN
)


@report_errors
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/flam_jax"))
    parser.add_argument(
        "--packages", default=",".join(DEFAULT_PACKAGES), help="comma-separated Debian packages"
    )
    parser.add_argument("--synthetic", action="store_true", help="skip apt; synthesise captioned events")
    parser.add_argument("--build", action="store_true", help="also build the flam_clips TFDS dataset")
    args = parser.parse_args(argv)
    start = time.time()
    out_dir = os.path.join(args.cache_dir, "demo_corpus")
    os.makedirs(out_dir, exist_ok=True)
    rules = None  # each package's own table
    if args.synthetic or not apt_available():
        if not args.synthetic:
            print("apt-get/dpkg not available: falling back to synthesised captioned events")
        rules = SYNTHETIC_RULES
        clips, note = synthetic_clips(out_dir), "synthetic"
    else:
        packages = [p.strip() for p in args.packages.split(",") if p.strip()]
        clips, note = collect(fetch(packages, args.cache_dir)), "debian:" + ",".join(packages)
    summary = write_corpus(clips, out_dir, note, rules)
    print(json.dumps(summary))
    if args.build:
        from flam_jax.data import builders

        # The manual directory was just written again: a dataset built before is stale.
        builders.build("clips", out_dir, os.path.join(args.cache_dir, "tfds"), overwrite=True)
        print(f"built flam_clips in {os.path.join(args.cache_dir, 'tfds')}")
    print(f"demo corpus in {out_dir} ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
