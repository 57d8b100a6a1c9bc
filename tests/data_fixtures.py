"""Materialise a committed text fixture (tests/fixtures/NAME) with synthesised audio."""

import os
import shutil

import numpy as np
import soundfile

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def audio_list(name):
    with open(os.path.join(FIXTURES, name, "audio_files.txt")) as f:
        for line in f:
            parts = line.rsplit(maxsplit=3) if line.strip().endswith("corrupt") else line.rsplit(maxsplit=2)
            if len(parts) >= 3:
                yield parts[0], float(parts[1]), int(parts[2]), parts[3:] == ["corrupt"]


def materialise(name, root):
    """Copy fixture ``name`` under ``root`` and write its audio files; returns the folder."""
    folder = os.path.join(root, name)
    shutil.copytree(os.path.join(FIXTURES, name), folder)
    for k, (path, seconds, rate, corrupt) in enumerate(audio_list(name)):
        full = os.path.join(folder, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if corrupt:
            with open(full, "wb") as f:
                f.write(b"RIFF\x00\x00 this is not audio")
            continue
        t = np.arange(round(seconds * rate)) / rate
        wave = 0.3 * np.sin(2 * np.pi * (220.0 * (k + 1)) * t)
        if path.endswith(".wav"):  # stereo, to exercise the downmix
            wave = np.stack([wave, 0.5 * wave], axis=1)
        soundfile.write(full, wave.astype(np.float32), rate)
    return folder


def synthetic_clips(root, events=40, backgrounds=8, seconds=(0.3, 1.5), background_s=3.0, seed=0):
    """A ``flam_clips`` manual folder of tone bursts (events) and noise beds tagged
    "ambiance" (backgrounds), all train split; returns the folder."""
    import json

    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "synthetic_clips")
    os.makedirs(folder, exist_ok=True)
    rate = 48_000
    entries = []
    for i in range(events + backgrounds):
        background = i >= events
        length = round((background_s if background else rng.uniform(*seconds)) * rate)
        if background:
            wave = 0.05 * rng.standard_normal(length)
        else:
            t = np.arange(length) / rate
            wave = rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * rng.uniform(200, 4000) * t)
        name = f"clip{i:03d}.flac"
        soundfile.write(os.path.join(folder, name), wave.astype(np.float32), rate)
        entry = {"path": name, "captions": [f"sound number {i}", f"variant {i}"], "source": "synthetic"}
        entry["tags"] = ["ambiance"] if background else ["event"]
        entries.append(entry)
    with open(os.path.join(folder, "manifest.jsonl"), "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in entries)
    return folder
