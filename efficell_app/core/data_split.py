"""The train / validation / test split of ``../shared/data`` used by the built-in model (one home for it).

Two versions ship in ``resources/models/``:

- ``data_split.json`` (v1, 174 pairs): per dataset, source images shuffled with ``random.Random(0)``,
  25 % of the sources held out for test. The phase-1/2 model was trained on its train part; the few-shot,
  diameter and speed benchmarks still read it so their numbers stay comparable.
- ``data_split_v2.json`` (v2, 684 pairs), made by :func:`make_split_v2` from v1 and ``manifest.csv``:

  1. every source of a v1 test image stays in test (so old numbers compare: ``test_v1`` lists them);
  2. every source of a v1 train image stays in train, except where a dataset has too few new sources to
     validate on (MoNuSeg got none, and the new Usiigaci quadrants belong to sets already split): there
     ``n`` v1-train sources move to validation (2 MoNuSeg slides, 5 Usiigaci sets);
  3. new sources (DSB2018 images) are shuffled with ``random.Random(seed)`` and cut 15 % validation,
     15 % test, the rest train.

  A *source* is a manifest ``source_file``: one DSB image id, one MoNuSeg slide, one Usiigaci set, so
  the tiles of one source are always on the same side. Validation chooses checkpoints, thresholds and
  augmentations; the test split is read once, for the final report.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from pathlib import Path

DATASETS = ("dsb2018_fluo", "monuseg", "usiigaci_phase")
SPLIT_FILES = {1: "data_split.json", 2: "data_split_v2.json"}
V2_FRACTIONS = {"validation": 0.15, "test": 0.15}
# v1-train sources moved to validation where a dataset brings too few new sources of its own.
V2_VALIDATION_FROM_V1_TRAIN = {"monuseg": 2, "usiigaci_phase": 5}
PARTS = ("train", "validation", "test")


def split_path(version: int = 2) -> Path:
    from .resources import models_dir

    return models_dir() / SPLIT_FILES[version]


def load_split(version: int = 2, path: Path | None = None) -> dict[str, dict[str, list[str]]]:
    """``{dataset: {"train"|"validation"|"test"[|"test_v1"]: [stem, ...]}}`` of a shipped split file."""
    return json.loads(Path(path or split_path(version)).read_text())["split"]


def pair_paths(data: Path, dataset: str, stems: Sequence[str]) -> list[tuple[Path, Path]]:
    """(image, mask) paths of ``stems`` in the ``../shared/data`` layout."""
    return [(data / dataset / "images" / f"{s}.tif", data / dataset / "masks" / f"{s}.tif") for s in stems]


def sources(manifest: Path) -> dict[str, dict[str, list[str]]]:
    """``{dataset: {source_file: [stem, ...]}}`` from ``manifest.csv`` (insertion order = file order)."""
    out: dict[str, dict[str, list[str]]] = {}
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            stem = Path(row["image"]).stem
            out.setdefault(row["dataset"], {}).setdefault(row["source_file"], []).append(stem)
    return out


def make_split_v2(manifest: Path, v1: dict[str, dict[str, list[str]]], seed: int = 0) -> dict:
    """Split v2 (the rule in the module docstring); deterministic for a given manifest, v1 split and seed."""
    by_source = sources(manifest)
    split: dict[str, dict[str, list[str]]] = {}
    for ds in DATASETS:
        old_test, old_train = set(v1[ds]["test"]), set(v1[ds]["train"])
        parts: dict[str, list[str]] = {p: [] for p in PARTS}  # lists of sources
        new, kept_train = [], []
        for src, stems in sorted(by_source[ds].items()):
            if old_test & set(stems):
                parts["test"].append(src)
            elif old_train & set(stems):
                kept_train.append(src)
            else:
                new.append(src)
        rng = random.Random(seed)
        rng.shuffle(new)
        n_val, n_test = round(V2_FRACTIONS["validation"] * len(new)), round(V2_FRACTIONS["test"] * len(new))
        parts["validation"] += new[:n_val]
        parts["test"] += new[n_val:n_val + n_test]
        parts["train"] += new[n_val + n_test:]
        rng.shuffle(kept_train)
        k = V2_VALIDATION_FROM_V1_TRAIN.get(ds, 0)
        parts["validation"] += kept_train[:k]
        parts["train"] += kept_train[k:]
        split[ds] = {p: sorted(s for src in parts[p] for s in by_source[ds][src]) for p in PARTS}
        split[ds]["test_v1"] = sorted(v1[ds]["test"])
    return {
        "version": 2,
        "seed": seed,
        "rule": ("source = manifest source_file (DSB image id, MoNuSeg slide, Usiigaci set); sources of v1 test images stay in "
                 "test (test_v1 lists the v1 test images); sources of v1 train images stay in train except "
                 f"{V2_VALIDATION_FROM_V1_TRAIN} of them (shuffled with random.Random(seed)) moved to validation; new sources "
                 f"shuffled with random.Random(seed): {V2_FRACTIONS} of them, rest train"),
        "validation_note": ("the MoNuSeg and Usiigaci validation sources were v1 train sources, seen by the phase-1/2 model: "
                            "their validation AP flatters models started from it"),
        "split": split,
    }


def main(argv: list[str] | None = None) -> int:
    """Regenerate ``resources/models/data_split_v2.json`` (``python -m efficell_app.core.data_split``)."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    out = a.out or split_path(2)
    doc = make_split_v2(a.data / "manifest.csv", load_split(1))
    out.write_text(json.dumps(doc, indent=1) + "\n")
    for ds, parts in doc["split"].items():
        print(ds, {k: len(v) for k, v in parts.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
