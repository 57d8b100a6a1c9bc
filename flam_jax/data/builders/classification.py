"""``flam_classification``: single-label clips with folds, in the ESC-50 or UrbanSound8K layouts.

Configs:
- ``esc50``: ``meta/esc50.csv`` (filename, fold, target, category, ...) and ``audio/``.
- ``urbansound8k``: ``metadata/UrbanSound8K.csv`` (slice_file_name, fold, classID, class,
  ...) and ``audio/fold{N}/``.
Everything lands in one ``test`` split; evaluators cross-validate over ``fold``.
"""

import numpy as np
import tensorflow_datasets as tfds

from flam_jax import paths
from flam_jax.data.builders import common
from flam_jax.errors import DataError


class FlamClassification(common.Builder):
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = (
        tfds.core.BuilderConfig(name="esc50", description="ESC-50 layout"),
        tfds.core.BuilderConfig(name="urbansound8k", description="UrbanSound8K layout"),
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = "The ESC-50 or UrbanSound8K folder as distributed."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Single-label classification clips (FLAC, 48 kHz mono) with folds.",
            features=common.audio_features(
                label=tfds.features.Text(),
                caption=tfds.features.Text(),
                label_id=tfds.features.Scalar(dtype=np.int32),
                fold=tfds.features.Scalar(dtype=np.int32),
            ),
        )

    def _split_generators(self, dl_manager):
        folder = common.manual_dir(dl_manager, f"flam_classification/{self.builder_config.name}")
        return {"test": self._generate_examples(folder)}

    def _generate_examples(self, folder):
        if self.builder_config.name == "esc50":
            table = paths.join(folder, "meta", "esc50.csv")
            names, label_cols, id_cols = ("filename",), ("category",), ("target",)
        else:
            table = paths.join(folder, "metadata", "UrbanSound8K.csv")
            names, label_cols, id_cols = ("slice_file_name",), ("class",), ("classID",)
        rows = common.read_table(table)

        def items():
            for number, row in enumerate(rows, 2):
                name = common.column(row, names, table)
                label = common.column(row, label_cols, table)
                try:
                    fold = int(common.column(row, ("fold",), table))
                    label_id = int(common.column(row, id_cols, table))
                except ValueError as err:
                    raise DataError(f"{table}:{number}: fold and class id must be integers") from err
                dirs = [paths.join(folder, "audio"), paths.join(folder, "audio", f"fold{fold}")]
                features = {
                    "label": label,
                    "caption": common.humanise_label(label),
                    "label_id": label_id,
                    "fold": fold,
                }
                yield name, common.find_audio(dirs, [name]), features

        return self.examples(items(), f"flam_classification/{self.builder_config.name}")
