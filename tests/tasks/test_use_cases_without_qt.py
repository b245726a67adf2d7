"""Every use case is reachable from ``efficell_app.tasks`` with Qt refused at import, and runs end to end:
add images, segment + measure, annotate, export, evaluate, train (its own process)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r'''
import importlib.abc
import inspect
import json
import sys
from pathlib import Path

BLOCKED = ("PySide6", "shiboken6", "superqt", "qtpy", "pyqtgraph")


class RefuseQt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} refused: the tasks layer must not need Qt")
        return None


def main() -> None:
    sys.meta_path.insert(0, RefuseQt())
    from efficell_app import tasks
    from efficell_app.core.cancel import CancelToken
    from efficell_app.project import Project

    root, images, masks, adapter, out = map(Path, sys.argv[1:6])
    got = {"generators": sorted(k for k, f in tasks.USE_CASES.items() if inspect.isgeneratorfunction(f))}
    with Project.create(root) as p:
        added = list(tasks.add_images(p, [images], "plate", cancel=CancelToken()))[-1].report.added
        got["add images"] = len(added)
        settings = tasks.SegmentSettings(model=str(adapter), diameter=20.0, device="cpu", encoder_weights=None)
        events = list(tasks.segment_images(p, added, settings, cancel=CancelToken()))
        done = [e for e in events if isinstance(e, tasks.ImageSegmented)]
        got["segment + measure"] = [len(e.measured.cells) + e.measured.summary["objects_below_min_size"] == e.n_cells
                                    for e in done]  # every object measured but those below the minimum size
        saved = list(tasks.save_annotation(p, added[0], done[0].labels, cancel=CancelToken()))
        got["annotate"] = [s.version for s in saved]
        written = [e.path.name for e in tasks.export_images(p, added, tasks.ExportOptions("project", ("xlsx",), out),
                                                            cancel=CancelToken())
                   if isinstance(e, tasks.ExportProgress) and e.path is not None]
        got["export"] = written
        scores = list(tasks.score_folders(masks, masks, (0.5,), cancel=CancelToken()))
        got["evaluate"] = [s.scores[0.5].ap for s in scores if isinstance(s, tasks.Scored)]
        request = tasks.TrainingRequest(image_ids=(added[0],), name="no-qt", init_adapter=None, device="cpu",
                                        encoder_weights=None, small_encoder=True, threads=1,
                                        overrides={"epochs": 1, "minutes": None, "batch_size": 2, "crop": 128,
                                                   "target_diameter": 20.0, "tune_thresholds": False})
        trained = list(tasks.train_project_adapter(p, request, cancel=CancelToken()))
        got["train"] = [a.adapter.name for a in trained if isinstance(a, tasks.AdapterAdded)]
    got["qt_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps(got))


if __name__ == "__main__":
    main()
'''


@pytest.mark.slow
def test_every_use_case_runs_with_qt_refused(tmp_path: Path, dsb_pairs) -> None:
    import torch

    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.model import build_adapters
    from efficell_app.core.model.adapter_io import RANDOM_WEIGHTS, AdapterMeta, save_adapter
    from efficell_app.core.model.adapters import AdapterConfig

    torch.manual_seed(0)  # a small adapter for the full-size compact encoder with random weights (as the GUI tests)
    enc = build_encoder("efficell_compact", weights=None)
    cfg = AdapterConfig(dim=32, n_prompts=4, heads=2, depth=1, morph_widths=(8, 8, 8), decoder_widths=(16, 16, 8))
    adapter = tmp_path / "adapter.safetensors"
    save_adapter(adapter, build_adapters(enc.out_channels, enc.stride, cfg),
                 AdapterMeta(encoder="efficell_compact", encoder_sha256=RANDOM_WEIGHTS, in_channels=enc.out_channels,
                             stride=enc.stride, config=cfg.to_dict(), name="no-qt-test"))
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for img, mask in dsb_pairs[:2]:
        shutil.copy(img, images / img.name)
        shutil.copy(mask, masks / img.name)
    script = tmp_path / "run_use_cases.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "proj"), str(images), str(masks), str(adapter),
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["generators"] == sorted(["add images", "segment + measure", "annotate", "train", "export", "evaluate"])
    assert got["add images"] == 2 and got["segment + measure"] == [True, True]
    assert got["annotate"] == [1] and got["export"] == ["proj_measurements.xlsx"]
    assert got["evaluate"] == [1.0, 1.0] and got["train"] == ["no-qt"]
    assert got["qt_loaded"] == []
