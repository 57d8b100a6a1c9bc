"""``flam_strong``: clips with timed events, from DCASE-style TSV annotations.

Manual directory: one ``{split}.tsv`` per split (train, validation, test) with columns
``filename onset offset event_label`` (DESED, UrbanSED, MAESTRO) or the AudioSet-strong
names ``segment_id start_time_seconds end_time_seconds label``; a row with empty
onset/offset marks a clip without events. Audio lives in ``audio/{split}/`` or ``audio/``.
Each event's ``caption`` is its label made readable ("Alarm_bell_ringing" -> "alarm bell
ringing"); closed-set SED data enter training with class names as texts. AudioSet-strong's
labels are MIDs (``/m/09x0r``): their captions are the display names of the
``ontology.json`` or ``mid_to_display_name.tsv`` in the manual directory (``ontology.py``);
a MID without a name is a one-line error naming it. ``label`` keeps the MID.
"""

from collections import OrderedDict

import tensorflow_datasets as tfds

from flam_jax import paths
from flam_jax.data.builders import common, ontology
from flam_jax.errors import DataError

SPLITS = ("train", "validation", "test")
FILE_COLUMNS = ("filename", "segment_id", "file")
ONSET_COLUMNS = ("onset", "start_time_seconds", "start")
OFFSET_COLUMNS = ("offset", "end_time_seconds", "end")
LABEL_COLUMNS = ("event_label", "label")


def read_events(path: str) -> "OrderedDict[str, list[tuple[float, float, str]]]":
    clips: OrderedDict[str, list[tuple[float, float, str]]] = OrderedDict()
    for number, row in enumerate(common.read_table(path, delimiter="\t"), 2):
        name = common.column(row, FILE_COLUMNS, path)
        events = clips.setdefault(name, [])
        onset, offset = common.column(row, ONSET_COLUMNS, path), common.column(row, OFFSET_COLUMNS, path)
        label = common.column(row, LABEL_COLUMNS, path)
        if not onset and not offset:
            continue
        try:
            start, end = float(onset), float(offset)
        except ValueError as err:
            raise DataError(f"{path}:{number}: onset/offset are not numbers") from err
        if end < start or not label:
            raise DataError(f"{path}:{number}: event needs offset >= onset and a label")
        events.append((start, end, label))
    return clips


class FlamStrong(common.Builder):
    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "A folder with {split}.tsv annotations and audio/ (DCASE layout)."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Strongly labelled SED clips (FLAC, 48 kHz mono) with timed events.",
            features=common.audio_features(events=common.timed_events(caption=tfds.features.Text())),
        )

    def _split_generators(self, dl_manager):
        folder = common.manual_dir(dl_manager, "flam_strong")
        present = [s for s in SPLITS if paths.isfile(paths.join(folder, f"{s}.tsv"))]
        if not present:
            raise DataError(f"flam_strong: no train/validation/test .tsv in {folder}")
        return {s: self._generate_examples(folder, s) for s in present}

    def _generate_examples(self, folder, split):
        table = paths.join(folder, f"{split}.tsv")
        clips = read_events(table)
        names = ontology.label_names(folder)
        captions = {
            label: common.humanise_label(ontology.name_of(label, names, table))
            for events in clips.values()
            for _, _, label in events
        }
        audio_dirs = [paths.join(folder, "audio", split), paths.join(folder, "audio"), folder]

        def items():
            for name, events in clips.items():
                features = {
                    "events": {
                        "onset": [e[0] for e in events],
                        "offset": [e[1] for e in events],
                        "label": [e[2] for e in events],
                        "caption": [captions[e[2]] for e in events],
                    }
                }
                yield name, common.find_audio(audio_dirs, [name]), features

        return self.examples(items(), "flam_strong")
