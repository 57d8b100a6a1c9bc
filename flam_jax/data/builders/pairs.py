"""``flam_pairs``: audio–caption retrieval sets in the AudioCaps or Clotho CSV layouts.

Configs:
- ``audiocaps``: ``train.csv``, ``val.csv``, ``test.csv`` with columns audiocap_id,
  youtube_id, start_time, caption (rows of one clip are grouped, so the test split's five
  captions land in one example). Audio in ``audio/{split}/`` or ``audio/``, named
  ``{youtube_id}_{start_time}``, ``{youtube_id}``, ``Y{youtube_id}`` or ``{audiocap_id}``
  with any audio extension.
- ``clotho``: ``clotho_captions_{development,validation,evaluation}.csv`` with file_name,
  caption_1..caption_5; audio in ``{development,validation,evaluation}/``.
  development -> train, evaluation -> test.
"""

from collections import OrderedDict

import tensorflow_datasets as tfds

from flam_jax import paths
from flam_jax.data.builders import common
from flam_jax.errors import DataError

AUDIOCAPS_SPLITS = {"train": "train", "validation": "val", "test": "test"}
CLOTHO_SPLITS = {"train": "development", "validation": "validation", "test": "evaluation"}


class FlamPairs(common.Builder):
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = (
        tfds.core.BuilderConfig(name="audiocaps", description="AudioCaps CSV layout"),
        tfds.core.BuilderConfig(name="clotho", description="Clotho CSV layout"),
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = "AudioCaps or Clotho CSV files and audio folders (see module doc)."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Audio–caption retrieval pairs (FLAC, 48 kHz mono).",
            features=common.audio_features(captions=tfds.features.Sequence(tfds.features.Text())),
        )

    def _split_generators(self, dl_manager):
        folder = common.manual_dir(dl_manager, f"flam_pairs/{self.builder_config.name}")
        if self.builder_config.name == "audiocaps":
            tables = {s: paths.join(folder, f"{n}.csv") for s, n in AUDIOCAPS_SPLITS.items()}
        else:
            tables = {s: paths.join(folder, f"clotho_captions_{n}.csv") for s, n in CLOTHO_SPLITS.items()}
        present = {s: p for s, p in tables.items() if paths.isfile(p)}
        if not present:
            raise DataError(f"flam_pairs/{self.builder_config.name}: no caption CSV in {folder}")
        return {s: self._generate_examples(folder, s, p) for s, p in present.items()}

    def _generate_examples(self, folder, split, table):
        rows = common.read_table(table)
        if self.builder_config.name == "audiocaps":
            items = self._audiocaps(folder, split, table, rows)
        else:
            items = self._clotho(folder, split, table, rows)
        return self.examples(items, f"flam_pairs/{self.builder_config.name}")

    def _audiocaps(self, folder, split, table, rows):
        dirs = [paths.join(folder, "audio", AUDIOCAPS_SPLITS[split]), paths.join(folder, "audio", split)]
        dirs.append(paths.join(folder, "audio"))
        clips: OrderedDict[str, dict] = OrderedDict()
        for row in rows:
            youtube = common.column(row, ("youtube_id",), table)
            start = common.column(row, ("start_time",), table)
            clip = clips.setdefault(f"{youtube}_{start}", {"captions": [], "ids": []})
            clip["captions"].append(common.column(row, ("caption",), table))
            clip["ids"].append(common.column(row, ("audiocap_id",), table))
        for key, clip in clips.items():
            youtube, start = key.rsplit("_", 1)
            names = [key, youtube, f"Y{youtube}", *clip["ids"]]
            yield key, common.find_audio(dirs, names), {"captions": clip["captions"]}

    def _clotho(self, folder, split, table, rows):
        dirs = [
            paths.join(folder, CLOTHO_SPLITS[split]),
            paths.join(folder, "audio", CLOTHO_SPLITS[split]),
        ]
        for row in rows:
            name = common.column(row, ("file_name",), table)
            captions = [row[k] for k in sorted(row) if k.startswith("caption") and row[k]]
            yield name, common.find_audio(dirs, [name]), {"captions": captions}
