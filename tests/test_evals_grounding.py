"""AudioGrounding (text-to-audio grounding): the reader on the v2 layout and the TAG protocol.

The fixture is the release's layout written into tmp_path (JSON lists + wav files). The
runner's metrics must equal a direct computation with ``evals.sed`` on the pairs as the
protocol defines them (one file per (clip, phrase), one class, scored on its own clip), so
scoring a phrase against other clips, mixing up pairs or dropping a window would show.
"""

import json
import os

import numpy as np
import pytest
from test_evals_runner import EnergyFLAM, _tone, _write

from flam_jax import timeline
from flam_jax.data import builders
from flam_jax.errors import DataError
from flam_jax.evals import grounding, runner, sed
from flam_jax.evals.benchmarks import get_benchmark, open_source, read_items

# audiocap_id → (audio_id, where the audio goes, seconds, loud spans, caption key, phrases)
ITEMS = {
    1: (
        "Yaaa.wav",
        "audio/test/Yaaa.wav",
        10.0,
        [(1.0, 3.0), (6.0, 8.5)],
        "tokens",
        {
            "a beep": [[1.0, 2.0]],
            "a tone": [[6.0, 8.5]],
        },
    ),
    # The same clip with a second caption: "caption" instead of "tokens", a repeated phrase.
    2: ("Yaaa.wav", None, 10.0, None, "caption", {"beeping": [[1.0, 3.0], [6.0, 8.5]]}),
    # 15 s: two SED windows; named without its "Y" on disk; one phrase without segments.
    3: (
        "Ybbb.wav",
        "audio/bbb.wav",
        15.0,
        [(11.0, 13.0)],
        "tokens",
        {
            "a long beep": [[11.0, 13.0]],
            "nothing": [],
        },
    ),
    4: ("Yccc.wav", None, 10.0, None, "tokens", {"a missing clip": [[0.0, 1.0]]}),  # no audio on disk
    5: ("Yddd.wav", "test/Yddd.wav", 3.0, [], "tokens", {"only silence": []}),  # no phrase left
    # 30 s, three windows: with clip 1's ambiguity (2 false positives) the PSD-ROC needs the
    # dataset to last over 72 s for an operating point within 100 false positives per hour.
    6: ("Yeee.wav", "audio/Yeee.wav", 30.0, [(25.0, 27.0)], "tokens", {"a late beep": [[25.0, 27.0]]}),
}


def grounding_fixture(root) -> str:
    folder = os.path.join(root, "audiogrounding")
    items = []
    for audiocap_id, (audio_id, path, seconds, spans, caption_key, phrases) in ITEMS.items():
        if path:
            _write(folder, path, _tone(seconds, spans, audiocap_id))
        phrase_items = [
            {"phrase": text, "start_index": 0, "end_index": 1, "segments": segments}
            for text, segments in phrases.items()
        ]
        items.append(
            {
                "audiocap_id": audiocap_id,
                "audio_id": audio_id,
                caption_key: " ".join(phrases) + " sounds",
                "phrases": phrase_items,
            }
        )
    # A phrase repeated within one caption: its segments join (touching: [1, 2] + [2, 3]).
    items[0]["phrases"].append(
        {"phrase": "a  beep", "start_index": 5, "end_index": 6, "segments": [[2.0, 3.0]]}
    )
    with open(os.path.join(folder, "test.json"), "w") as f:
        json.dump(items, f)
    return folder


def test_reader_items_segments_and_skips(tmp_path):
    folder = grounding_fixture(str(tmp_path))
    built = builders.build("grounding", folder, str(tmp_path / "tfds"))
    assert [(item, reason) for _, item, reason in built.skips.items] == [
        ("3 'nothing'", "phrase without segments"),
        ("4", "no audio file"),
        ("5", "no phrase with segments"),
    ]
    source, split = open_source(get_benchmark("audiogrounding"), str(tmp_path / "tfds"))
    items = {item.id: item for item in read_items(source)}
    assert split == "test" and set(items) == {"1", "2", "3", "6"}
    assert items["1"].events == [(1.0, 2.0, "a beep"), (6.0, 8.5, "a tone"), (2.0, 3.0, "a beep")]
    assert items["1"].captions == ["a beep a tone sounds"] and items["2"].captions == ["beeping sounds"]
    assert items["1"].recording == items["2"].recording == "Yaaa.wav"
    assert items["3"].num_samples == 15 * 48000 and items["3"].events == [(11.0, 13.0, "a long beep")]

    pairs = grounding.pairs([items[k] for k in ("1", "2", "3", "6")])
    assert [(p.query, p.events) for p in pairs] == [
        ("a beep", ((1.0, 3.0, "phrase"),)),  # the repeated phrase: one pair, segments merged
        ("a tone", ((6.0, 8.5, "phrase"),)),
        ("beeping", ((1.0, 3.0, "phrase"), (6.0, 8.5, "phrase"))),
        ("a long beep", ((11.0, 13.0, "phrase"),)),
        ("a late beep", ((25.0, 27.0, "phrase"),)),
    ]


def _direct(model, items):
    """The protocol computed by hand: every (pair, window) scored on its own clip, one class."""
    audio = {item.recording: item.audio() for item in items}  # as the builder decoded it
    files = [  # (audio, window, phrase, events in that window)
        ("Yaaa.wav", 0, "a beep", [(1.0, 3.0, "phrase")]),
        ("Yaaa.wav", 0, "a tone", [(6.0, 8.5, "phrase")]),
        ("Yaaa.wav", 0, "beeping", [(1.0, 3.0, "phrase"), (6.0, 8.5, "phrase")]),
        ("Ybbb.wav", 0, "a long beep", []),
        ("Ybbb.wav", 1, "a long beep", [(1.0, 3.0, "phrase")]),
        ("Yeee.wav", 0, "a late beep", []),
        ("Yeee.wav", 1, "a late beep", []),
        ("Yeee.wav", 2, "a late beep", [(5.0, 7.0, "phrase")]),
    ]
    scores = []
    for name, k, phrase, _ in files:
        window = runner.sed_windows(audio[name])[k][None].astype(np.float32)
        scores.append(model.frame_scores(model.embed_audio(window), model.embed_text([phrase]))[0])
    return np.stack(scores), [f[3] for f in files]


def test_runner_equals_the_protocol_computed_directly(tmp_path):
    folder = grounding_fixture(str(tmp_path))
    out = tmp_path / "out"
    model = EnergyFLAM()
    result = runner.evaluate(
        model, "audiogrounding", folder, out_dir=str(out), batch_size=2, cache_dir=str(tmp_path / "tfds")
    )
    m = result["metrics"]
    assert result["task"] == "grounding" and m["items"] == 4 and m["pairs"] == 5 and m["files"] == 8
    assert sorted(model.seen_texts) == [
        "a beep",
        "a late beep",
        "a long beep",
        "a tone",
        "beeping",
    ]  # each once
    source, _ = open_source(get_benchmark("audiogrounding"), str(tmp_path / "tfds"))
    scores, events = _direct(EnergyFLAM(), read_items(source))
    labels = runner.events_to_frame_labels(events, ["phrase"], 32)
    assert m["frame_auroc"] == pytest.approx(sed.frame_auroc(scores, labels)["micro"], abs=1e-6)
    # Loudness cannot tell "a beep" from "a tone" in clip 1: below 1, above chance.
    assert 0.6 < m["frame_auroc"] < 1.0
    filtered = timeline.median_filter(scores, 3)
    assert m["psds1"] == pytest.approx(sed.psds(filtered, events, ["phrase"], sed.PSDS1)["psds"], abs=1e-6)
    assert m["psds1_alpha_st0"] == pytest.approx(m["psds1"])  # one class: α_st has nothing to penalise
    assert 0 < m["psds1"] < 1
    assert json.loads((out / "metrics.json").read_text())["metrics"]["pairs"] == 5
    assert (out / "activation_maps.png").stat().st_size > 1000


def test_oracle_scores_are_perfect():
    events = [[(1.0, 3.0, "phrase")], [(6.0, 8.5, "phrase")], []]
    labels = runner.events_to_frame_labels(events, ["phrase"], 32).astype(np.float32)
    metrics, _ = runner.sed_metrics(labels, events, [grounding.CLASS], "micro")
    assert metrics["frame_auroc"] == 1.0 and metrics["psds1"] == pytest.approx(1.0)
    assert metrics["clips"] == 3 and metrics["events"] == 2
    flipped, _ = runner.sed_metrics(1.0 - labels, events, [grounding.CLASS], "micro")
    assert flipped["frame_auroc"] == 0.0 and flipped["psds1"] == 0.0


def test_bad_layouts_are_one_line_errors(tmp_path):
    folder = tmp_path / "ag"
    folder.mkdir()
    cases = [
        ({"audiocap_id": {"0": 1}, "audio_id": {"0": "Ya.wav"}}, "not a list of AudioGrounding items"),
        ([{"audio_id": "Ya.wav", "tokens": "a dog", "phrases": "a dog"}], "item 0 has no list of phrases"),
        ([{"audio_id": "Ya.wav", "phrases": []}], "item 0 has no caption"),
        (
            [
                {
                    "audio_id": "Ya.wav",
                    "tokens": "a dog",
                    "phrases": [{"phrase": "a dog", "segments": [[3, 1]]}],
                }
            ],
            "needs offset >= onset",
        ),
    ]
    for k, (content, message) in enumerate(cases):
        (folder / "test.json").write_text(json.dumps(content))
        with pytest.raises(DataError, match=message) as err:
            builders.build("grounding", str(folder), str(tmp_path / f"tfds{k}"))
        assert "test.json" in str(err.value) and "\n" not in str(err.value)
    (folder / "test.json").rename(folder / "test_v1.json")
    with pytest.raises(DataError, match="no train.json, val.json or test.json"):
        builders.build("grounding", str(folder), str(tmp_path / "tfds_none"))
