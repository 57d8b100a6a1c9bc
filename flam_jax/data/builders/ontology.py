"""Display names for coded labels: AudioSet's machine ids (MIDs, ``/m/09x0r`` → "Speech").

Three files name them, whichever the user has: AudioSet's ``ontology.json`` (a list of
objects with ``id`` and ``name``), ``mid_to_display_name.tsv`` (mid<TAB>name, no header;
AudioSet-strong's release) or ``class_labels_indices.csv`` (index,mid,display_name).
The strong builder names its MIDs with them at build time, the evaluation runner at scoring.
"""

import csv
import io
import json
import re

from flam_jax import paths
from flam_jax.errors import DataError

LABEL_NAME_FILES = ("ontology.json", "mid_to_display_name.tsv", "class_labels_indices.csv")
_MID = re.compile(r"^/[a-z]/[0-9a-z_]+$")


def is_mid(label: str) -> bool:
    return bool(_MID.match(label))


def label_names(folder: str, path: str | None = None) -> dict[str, str]:
    """The names in ``path`` or, if present in ``folder``, in the first of LABEL_NAME_FILES.

    Empty when there is none: labels are then used as they are."""
    candidates = [path] if path else [paths.join(folder, name) for name in LABEL_NAME_FILES]
    for candidate in candidates:
        if not candidate or not paths.isfile(candidate):
            if path:
                raise DataError(f"label name file not found: {path}")
            continue
        return read_label_names(candidate)
    return {}


def read_label_names(path: str) -> dict[str, str]:
    text = paths.read_text(path)
    if path.endswith(".json"):
        try:
            entries = json.loads(text)
            return {str(e["id"]).strip(): str(e["name"]).strip() for e in entries}
        except (json.JSONDecodeError, TypeError, KeyError) as err:
            raise DataError(f"{path}: not an AudioSet ontology (a list of objects with id and name)") from err
    with io.StringIO(text, newline="") as f:
        if path.endswith(".tsv"):
            return {r[0].strip(): r[1].strip() for r in csv.reader(f, delimiter="\t") if len(r) >= 2}
        rows = list(csv.DictReader(f))
    if not rows or not {"mid", "display_name"} <= set(rows[0]):
        raise DataError(f"{path}: needs columns mid and display_name")
    return {r["mid"].strip(): r["display_name"].strip() for r in rows}


def name_of(label: str, names: dict[str, str], where: str) -> str:
    """``label``'s display name; a MID the names lack is a one-line error naming it."""
    if label in names:
        return names[label]
    if is_mid(label):
        if not names:
            raise DataError(
                f"{where}: label {label} is an AudioSet MID; put ontology.json or "
                "mid_to_display_name.tsv beside the annotations to name it"
            )
        raise DataError(f"{where}: MID {label} is not in the label name file")
    return label
