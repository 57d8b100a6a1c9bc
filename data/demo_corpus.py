"""Build the demo corpus: real recordings from Debian data packages, captioned and split.

    python data/demo_corpus.py [--cache-dir=~/.cache/flam_jax] [--build] [--synthetic]

1. ``apt-get download PKG`` + ``dpkg -x`` into CACHE/debs and CACHE/unpacked (no root
   install; nothing lands in the repository). Package sizes are checked first.
2. Every audio file (and every sound inside openttd-opensfx's ``.cat``) whose name matches
   a caption rule becomes a clip with 2–8 word captions, tags ("ambiance" marks
   backgrounds) and a licence from the package's Debian copyright file (or, for OpenSFX,
   from the title stored next to each sound).
3. Splits are by original recording: sounds cut from one recording share a group, and a
   group goes wholly to ``train`` or ``validation`` (by a hash, ~15%). Rules marked novel
   form a third split, ``novel``: sound classes and captions never seen in training, for
   open-vocabulary evaluation.
4. Writes CACHE/demo_corpus/{manifest.jsonl, licences.csv, unseen_captions.txt, audio/}
   (the ``clips`` builder's manual directory) and, with ``--build``, the TFDS dataset in
   CACHE/tfds.

Without apt (or with ``--synthetic``) it says so and writes procedurally synthesised
captioned events instead, so the demo still runs.

Reserved for independent evaluation and never used here: tuxpaint-stamps-default,
wesnoth-*, widelands-data, supertuxkart-data.
"""

import argparse
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
import time

import numpy as np

from flam_jax.cli import report_errors
from flam_jax.errors import DataError

PACKAGES = ("openttd-opensfx", "sonic-pi-samples", "minetest-data", "sound-theme-freedesktop", "lmms-common")
RESERVED = ("tuxpaint-stamps-default", "wesnoth-*", "widelands-data", "supertuxkart-data")
MAX_PACKAGE_BYTES = 60 * 2**20  # refuse anything bigger than this per package
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga")
VALIDATION_PERCENT = 15


@dataclasses.dataclass(frozen=True)
class Rule:
    pattern: str  # regex searched in the clip key (file stem or OpenSFX title), case-insensitive
    captions: tuple[str, ...]
    tags: tuple[str, ...] = ()
    novel: bool = False  # the whole class is held out of training


AMB = ("ambiance",)
# First match wins. Keys: file stems ("drum_snare_hard", "env_sounds_water.1") and
# OpenSFX titles ("Steam train station departure").
RULES = (
    # --- backgrounds ---
    Rule(r"^env_sounds_water", ("flowing water", "a stream of running water"), AMB),
    Rule(r"^env_sounds_lava|cool_lava", ("bubbling lava", "thick liquid bubbling"), AMB),
    Rule(r"^fire_(large|fire)", ("a crackling fire", "fire burning steadily"), AMB),
    Rule(r"^fire_small", ("a small fire crackling", "quiet crackling flames"), AMB),
    Rule(r"furnace_active", ("a roaring furnace", "a furnace burning"), AMB),
    Rule(r"^heavy wind$|^wind$", ("wind blowing", "strong wind howling"), AMB),
    Rule(r"^sheep$", ("sheep bleating in a field", "a sheep calling outdoors"), AMB),
    Rule(r"ambi_(drone|haunted_hum|soft_buzz)", ("a low droning hum", "a dark ambient drone"), AMB),
    Rule(r"ambi_lunar_land|loop_drone", ("an eerie ambient soundscape", "a spacey ambient drone"), AMB),
    Rule(r"vinyl_hiss", ("vinyl record crackle and hiss", "the hiss of a record"), AMB),
    Rule(r"mining machinery", ("heavy machinery running", "an elevator motor whirring"), AMB),
    # --- vehicles and machines ---
    Rule(r"steam train|steam engine", ("a steam train whistle", "a steam locomotive puffing")),
    Rule(r"diesel/electric train|maglev|monorail", ("an electric train departing", "a train pulling away")),
    Rule(r"level crossing", ("a railway crossing bell ringing", "warning bells at a level crossing")),
    Rule(r"ship horn|ferry horn", ("a ship horn blowing", "a deep foghorn")),
    Rule(r"jet take off", ("a jet taking off", "a loud jet engine roaring")),
    Rule(r"propeller plane", ("a propeller plane engine", "a small airplane starting")),
    Rule(r"helicopter", ("a helicopter flying", "helicopter rotor blades chopping")),
    Rule(r"bus start|truck", ("a bus engine starting", "a heavy vehicle pulling away")),
    Rule(r"car horn|^horn", ("a car horn honking", "a vehicle horn beeping")),
    Rule(r"plane wheels", ("tyres screeching on the ground", "wheels skidding")),
    Rule(r"carts_cart_moving", ("a cart rolling on rails", "metal wheels rolling")),
    Rule(r"jackhammer", ("a jackhammer drilling", "a pneumatic drill hammering")),
    Rule(r"sawmill|chainsaw", ("a saw cutting wood", "a power saw running"), (), True),
    Rule(r"electric sparking", ("electric sparks crackling", "an electrical arc buzzing")),
    Rule(r"factory whistle", ("a factory whistle blowing", "a loud steam whistle")),
    Rule(r"loop_3d_printer", ("a 3d printer whirring", "a machine buzzing rhythmically")),
    # --- impacts, tools, objects ---
    Rule(r"^explosion$|tnt_explode|explode", ("a loud explosion", "an explosion booming")),
    Rule(r"big crash|^crash$|breakdown", ("a metal crash", "a loud crashing impact")),
    Rule(r"crashing tree|falling tree", ("a tree falling down", "wood cracking and crashing")),
    Rule(r"building bridge", ("hammering on metal", "a blacksmith hammering")),
    Rule(r"cash till|perc_till", ("a cash register ringing", "a till drawer opening")),
    Rule(r"door_open|door_close|fencegate|perc_door|steel_bar_door", ("a door opening", "a door closing")),
    Rule(r"chest_(open|close)", ("a wooden lid creaking", "a chest being opened")),
    Rule(r"break_glass", ("glass breaking", "glass shattering"), (), True),
    Rule(r"footstep", ("footsteps", "someone walking")),
    Rule(r"dig_|_dug|gravel_dig|ice_dig", ("digging in the ground", "a shovel scraping")),
    Rule(r"place_node", ("a block being placed", "a soft thud")),
    Rule(r"tool_breaks", ("a tool snapping", "something breaking with a crack")),
    Rule(r"flint_and_steel|tnt_ignite", ("striking a match", "a fuse being lit")),
    Rule(r"gunpowder_burning", ("a fuse hissing", "gunpowder fizzing")),
    Rule(r"extinguish_flame", ("a flame being put out", "a sizzle as fire goes out")),
    Rule(r"item_smoke", ("a puff of smoke", "a short hiss")),
    Rule(r"^splat", ("a wet splat", "mud splattering")),
    Rule(r"bubble|slurp", ("bubbles popping", "liquid bubbling")),
    Rule(r"camera-shutter", ("a camera shutter clicking", "a camera taking a photo")),
    Rule(r"trash-empty", ("paper being crumpled", "rubbish being thrown away")),
    # --- animals and people ---
    Rule(r"^cow$", ("a cow mooing", "cattle lowing")),
    Rule(r"^horse$", ("a horse neighing", "a horse whinnying")),
    Rule(r"bird|misc_crow", ("a bird chirping", "birds calling")),
    Rule(r"lion roar", ("a lion roaring", "a big cat growling")),
    Rule(r"monkeys", ("monkeys screeching", "apes chattering loudly")),
    Rule(r"applause", ("a crowd applauding", "people clapping and cheering")),
    Rule(r"oooh sound", ("a crowd going ooh", "people gasping in awe")),
    Rule(r"player_damage", ("a person grunting in pain", "a short grunt")),
    Rule(r"misc_burp", ("someone burping", "a loud burp")),
    # --- signals ---
    Rule(r"^beep$|elec_beep|elec_blip|elec_ping", ("an electronic beep", "a short beeping tone")),
    Rule(r"morse", ("morse code beeping", "a telegraph tapping")),
    Rule(r"^bell$|perc_bell|elec_bell|elec_chime|alarm-clock|^complete$", ("a bell ringing", "a chime")),
    Rule(r"phone|mehackit_phone", ("a telephone ringing", "a phone dial tone")),
    Rule(r"dialog|message|device-|service-log|suspend-error", ("a computer notification", "a soft alert")),
    Rule(r"mehackit_robot|glitch_robot", ("a robotic voice", "electronic robot chatter")),
    # --- music-like events (the demo's instruments) ---
    Rule(r"good year|bad year", ("a short musical jingle", "a brief fanfare")),
    Rule(r"bassdrum|drum_bass|bd_|kick", ("a bass drum kick", "a kick drum")),
    Rule(r"snare|sn_", ("a snare drum hit", "a snare drum")),
    Rule(r"hihat|cymbal|crash0|ride|splash", ("a cymbal", "a hi-hat cymbal")),
    Rule(r"tom", ("a tom drum", "a tom tom hit")),
    Rule(r"clap", ("hands clapping", "a handclap")),
    Rule(r"cowbell", ("a cowbell", "a cowbell struck")),
    Rule(r"tabla", ("a tabla drum", "indian hand drums"), (), True),
    Rule(r"loop_amen|loop_breakbeat|loop_perc|loop_tabla", ("a drum loop", "a breakbeat playing")),
    Rule(r"guit_", ("an electric guitar", "a guitar chord"), (), True),
    Rule(r"vinyl_(scratch|backspin|rewind)|scratch0", ("a record scratch", "a dj scratching a vinyl")),
    Rule(r"perc_swoosh|perc_swash|ambi_swoosh|ambi_dark_woosh", ("a whoosh", "something swooshing past")),
    Rule(r"ambi_choir", ("a choir singing", "voices singing together")),
    Rule(r"ambi_piano", ("a piano chord", "soft piano notes")),
    Rule(r"ambi_glass_(hum|rub)", ("a wine glass ringing", "a glass humming")),
)


@dataclasses.dataclass
class RawClip:
    package: str
    key: str  # what the rules see
    name: str  # output file name (unique within the package)
    group: str  # original recording, for the split
    licence: str
    data: bytes | None = None  # sounds extracted from an archive
    path: str | None = None  # or a file on disk


def check_allowed(package: str) -> None:
    for reserved in RESERVED:
        if fnmatch.fnmatch(package, reserved):
            raise DataError(f"package {package} is reserved for independent evaluation")


def match_rule(key: str, rules=RULES) -> Rule | None:
    for rule in rules:
        if re.search(rule.pattern, key, flags=re.IGNORECASE):
            return rule
    return None


def split_for(group: str, rule: Rule, validation_percent: int = VALIDATION_PERCENT) -> str:
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
    docs = os.path.join(root, "usr", "share", "doc", package, "copyright")
    stanzas = parse_copyright(docs)
    out = []
    for folder, _, files in sorted(os.walk(root)):
        for file in sorted(files):
            stem, ext = os.path.splitext(file)
            if ext.lower() not in AUDIO_EXTENSIONS:
                continue
            path = os.path.join(folder, file)
            rel = os.path.relpath(path, root)
            # "env_sounds_water.3" and "bassdrum03" are takes of one recording.
            group = re.sub(r"[._-]?\d+$", "", stem)
            name = rel.replace("/", "__")
            out.append(
                RawClip(package, stem, name, f"{package}:{group}", licence_for(rel, stanzas), path=path)
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


def write_corpus(clips: list[RawClip], out_dir: str, source_note: str, rules=RULES) -> dict:
    """Copy captioned clips to OUT/audio and write the manifest, licences and unseen captions."""
    audio_dir = os.path.join(out_dir, "audio")
    shutil.rmtree(audio_dir, ignore_errors=True)
    os.makedirs(audio_dir)
    entries, skipped = [], 0
    for clip in clips:
        rule = match_rule(clip.key, rules)
        if rule is None or (clip.data is not None and len(clip.data) < 1000):
            skipped += 1  # uncaptioned or an empty placeholder sound
            continue
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
                "split": split_for(clip.group, rule),
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
    counts = {s: sum(e["split"] == s for e in entries) for s in ("train", "validation", "novel")}
    summary = {
        "clips": len(entries),
        "skipped": skipped,
        "splits": counts,
        "backgrounds": sum("ambiance" in e["tags"] for e in entries),
        "unseen_captions": len(unseen),
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
    debs, unpacked_root = os.path.join(cache_dir, "debs"), os.path.join(cache_dir, "unpacked")
    os.makedirs(debs, exist_ok=True)
    out = {}
    for package in packages:
        check_allowed(package)
        target = os.path.join(unpacked_root, package)
        if not os.path.isdir(target):
            size = package_size(package)
            if size > MAX_PACKAGE_BYTES:
                raise DataError(f"package {package} is {size / 2**20:.0f} MiB, over the demo limit")
            existing = [f for f in os.listdir(debs) if f.startswith(package + "_") and f.endswith(".deb")]
            if not existing:
                print(f"downloading {package} ({size / 2**20:.1f} MiB)")
                _run(["apt-get", "download", package], cwd=debs)
                existing = [f for f in os.listdir(debs) if f.startswith(package + "_") and f.endswith(".deb")]
            if not existing:
                raise DataError(f"apt-get download {package} produced no .deb")
            os.makedirs(unpacked_root, exist_ok=True)
            _run(["dpkg", "-x", os.path.join(debs, sorted(existing)[-1]), target + ".partial"])
            os.replace(target + ".partial", target)  # a crash mid-unpack leaves no half tree
        out[package] = target
    return out


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
    for caption, kind in SYNTHETIC:
        for k in range(per_kind):
            path = os.path.join(folder, f"{kind}_{k:02d}.wav")
            soundfile.write(path, synthesise(kind, rng), 48_000)
            clips.append(
                RawClip(
                    "synthetic", caption, f"{kind}_{k:02d}.wav", f"synthetic:{kind}:{k}", "CC0", path=path
                )
            )
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
    for caption, kind in SYNTHETIC
)


@report_errors
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/flam_jax"))
    parser.add_argument("--packages", default=",".join(PACKAGES), help="comma-separated Debian packages")
    parser.add_argument("--synthetic", action="store_true", help="skip apt; synthesise captioned events")
    parser.add_argument("--build", action="store_true", help="also build the flam_clips TFDS dataset")
    args = parser.parse_args(argv)
    start = time.time()
    out_dir = os.path.join(args.cache_dir, "demo_corpus")
    os.makedirs(out_dir, exist_ok=True)
    rules = RULES
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

        builders.build("clips", out_dir, os.path.join(args.cache_dir, "tfds"))
        print(f"built flam_clips in {os.path.join(args.cache_dir, 'tfds')}")
    print(f"demo corpus in {out_dir} ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
