"""End to end: create, add real images, segment (real Segmenter), annotate, register an adapter,
export with the CLI, close, reopen: everything is there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from efficell_app.cli import main as cli_main
from efficell_app.core.errors import AdapterError, WeightsError
from efficell_app.core.images import read_mask
from efficell_app.core.measure import MIN_OBJECT_PX
from efficell_app.project import Project
from efficell_app.tasks.segment import segment_project
from efficell_app.tasks.export import export_project


def _real_segmenter(tmp_path: Path):  # noqa: ANN202
    """The built-in model (``Segmenter.load(None)``) when installed, else a tiny random adapter
    loaded by the same real ``Segmenter``."""
    import torch

    from efficell_app.core.pipeline import Segmenter

    torch.set_num_threads(1)
    try:
        return Segmenter.load(None, device="cpu"), None
    except (AdapterError, WeightsError):
        pass
    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.model.adapter_io import RANDOM_WEIGHTS, AdapterMeta, save_adapter
    from efficell_app.core.model.adapters import AdapterConfig, build_adapters

    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None)
    cfg = AdapterConfig(dim=32, n_prompts=4, heads=2, depth=1, morph_widths=(8, 8, 8), decoder_widths=(16, 16, 8))
    adapters = build_adapters(tuple(enc.out_channels), enc.stride, cfg)
    meta = AdapterMeta(encoder="efficell_compact", encoder_sha256=RANDOM_WEIGHTS, in_channels=tuple(enc.out_channels),
                       stride=enc.stride, config=cfg.to_dict(), name="tiny random", metrics={"AP50": 0.0},
                       training={"images": ["random init"]})
    path = tmp_path / "tiny.safetensors"
    save_adapter(path, adapters, meta)
    return Segmenter.load(path, device="cpu", encoder_weights=None), path


def _read_xlsx(path: Path) -> dict[str, list[tuple]]:
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True)
    return {ws.title: [tuple(r) for r in ws.iter_rows(values_only=True)] for ws in wb.worksheets}


@pytest.mark.slow
def test_full_round_trip(tmp_path: Path, test_data: Path, dsb_pairs: list[tuple[Path, Path]]) -> None:
    root = tmp_path / "Lab project"
    seg, adapter_path = _real_segmenter(tmp_path)
    with Project.create(root, name="Nuclei 2024") as p:
        report = p.add_folder(test_data / "dsb2018_fluo" / "images", "dsb")
        p.add_folder(test_data / "usiigaci_phase" / "images", "phase", copy=True)
        assert report.n_added == len(dsb_pairs) and not report.skipped
        events = list(segment_project(p, seg, "dsb"))
        assert len(events) == len(dsb_pairs) and all(e.ok for e in events), [e.error for e in events]
        first = p.list_images("dsb")[0]
        gt = read_mask(next(m for i, m in dsb_pairs if i.name == first.name))
        p.save_annotation(first.id, gt, note="ground truth")
        p.set_status(first.id, "reviewed")
        lib_file = adapter_path or seg.adapter_path
        adapter = p.add_adapter(lib_file, "my nuclei", training_images=[first.name], metrics={"AP50": 0.5})
        predicted = {e.image_id: p.load_labels(p.latest_result(e.image_id)) for e in events}
        identity = seg.identity

    out = tmp_path / "cells.xlsx"
    assert cli_main(["export", "--project", str(root), "--out", str(out)]) == 0
    sheets = _read_xlsx(out)
    header, *rows = sheets["Images"]
    col = {name: i for i, name in enumerate(header)}
    by_image = {r[col["image"]]: r for r in rows}
    assert len(rows) == len(dsb_pairs)  # phase images were never segmented: left out
    assert by_image[first.name][col["labels"]].startswith("annotation")
    assert by_image[first.name][col["cell_count"]] == len(np.unique(gt)) - 1
    n_cells = sum(r[col["cell_count"]] for r in rows)
    assert len(sheets["Cells"]) - 1 == n_cells
    settings = dict(sheets["Settings"][1:])
    assert settings["project"] == "Nuclei 2024"

    with Project.open(root) as p:  # reopen: everything is there
        assert [(s.name, s.n_images) for s in p.list_sets()] == [("dsb", len(dsb_pairs)), ("phase", 2)]
        assert p.get_image(first.id).status == "reviewed"
        assert np.array_equal(p.load_annotation(first.id), gt)
        assert p.annotation_history(first.id)[0].note == "ground truth"
        for image_id, labels in predicted.items():
            res = p.latest_result(image_id)
            assert np.array_equal(p.load_labels(res), labels)
            assert res.identity["adapter_sha256"] == identity["adapter_sha256"]
            assert res.settings["encoder"] == identity["encoder"]
        assert p.get_image(events[1].image_id).status == "segmented"
        assert all(r.status == "new" and r.inside_project for r in p.list_images("phase"))
        lib = p.get_adapter("my nuclei")
        assert lib.sha256 == adapter.sha256 == identity["adapter_sha256"] and lib.path.is_file()
        assert lib.training_images == (first.name,) and lib.encoder == identity["encoder"]
        assert p.list_runs()[0].identity["adapter_sha256"] == identity["adapter_sha256"]


def test_export_sources_and_errors(project: Project, image_folder: Path, segmenter, tmp_path: Path) -> None:  # noqa: ANN001
    ids = project.add_folder(image_folder, "exp").added
    list(segment_project(project, segmenter, "exp"))
    rec = project.get_image(ids[0])
    ann = np.zeros((rec.height, rec.width), np.int32)
    ann[2:12, 2:12] = 1
    project.save_annotation(ids[0], ann)
    report = export_project(project, tmp_path / "ann.xlsx", source="annotation")
    assert report.n_images == 1 and report.n_cells == 1 and len(report.not_labelled) == 3
    project.get_image(ids[1]).path.unlink()
    report = export_project(project, tmp_path / "all.xlsx")
    assert report.n_images == 3 and len(report.errors) == 1 and "file not found" in report.errors[0]
    sheets = _read_xlsx(tmp_path / "all.xlsx")
    assert {"set", "image", "cell_id"} <= set(sheets["Cells"][0])


def test_cli_export_usage_and_locked(project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["export", "--project", str(project.root), "--out", str(tmp_path / "x.csv")]) == 2
    assert cli_main(["export", "--project", str(project.root), "--out", str(tmp_path / "x.xlsx")]) == 1
    assert "the project is already open" in capsys.readouterr().err
    project.close()
    assert cli_main(["export", "--project", str(project.root), "--out", str(tmp_path / "x.xlsx"), "--set", "no"]) == 1
    assert "no image set named 'no'" in capsys.readouterr().err
    assert cli_main(["export", "--project", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.xlsx")]) == 1
    assert "folder not found" in capsys.readouterr().err
    assert not (tmp_path / "x.xlsx").exists()


def _measured(labels: np.ndarray) -> int:
    """The objects the measurements hold: those of at least MIN_OBJECT_PX pixels."""
    return int(np.count_nonzero(np.bincount(labels.ravel())[1:] >= MIN_OBJECT_PX))


def test_measure_one_image(project: Project, image_folder: Path, segmenter) -> None:  # noqa: ANN001
    ids = project.add_folder(image_folder, "exp").added
    assert project.measure(ids[0]) is None
    list(segment_project(project, segmenter, "exp"))
    df, origin = project.measure(ids[0])
    sizes = np.bincount(project.labels_for(ids[0]).labels.ravel())[1:]
    sizes = sizes[sizes > 0]
    assert len(sizes) == project.latest_result(ids[0]).n_cells
    # every object but those below the minimum size, which mean nothing as shapes
    assert origin.startswith("result") and len(df) == int(np.count_nonzero(sizes >= MIN_OBJECT_PX)) < len(sizes)
    assert df["area_px"].min() >= MIN_OBJECT_PX
    assert project.measure(ids[0], source="annotation") is None


def test_export_events_tables_and_per_image_files(project: Project, image_folder: Path, segmenter,
                                                  tmp_path: Path) -> None:  # noqa: ANN001
    import pandas as pd
    import tifffile

    from efficell_app.tasks.export import ExportFailed, ExportProgress, export_events

    ids = project.add_folder(image_folder, "exp").added
    list(segment_project(project, segmenter, "exp", image_ids=ids[:2]))
    out = tmp_path / "out"
    out.mkdir()
    gen = export_events(project, [out / "m.xlsx", out / "m.csv"], ["tiff", "geojson"], out,
                        image_ids=[ids[2], ids[0], ids[1]], pixel_size_um=0.5, scope="set", write_empty=False)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            report = stop.value
            break
    failed = [e.message for e in events if isinstance(e, ExportFailed)]
    assert len(failed) == 1 and "not segmented yet" in failed[0] and report.not_labelled == [project.get_image(ids[2]).path]
    done = [e.done for e in events if isinstance(e, ExportProgress)]
    assert done == sorted(done) and done[-1] == 5  # three images and two tables
    names = sorted(p.name for p in report.files)
    stems = [Path(project.get_image(i).name).stem for i in ids[:2]]
    assert names == sorted([f"{s}_labels.tif" for s in stems] + [f"{s}.geojson" for s in stems] + ["m.csv", "m.xlsx"])
    labels = tifffile.imread(out / f"{stems[0]}_labels.tif")
    assert np.array_equal(labels, project.labels_for(ids[0]).labels)
    cells = pd.read_csv(out / "m.csv", comment="#")
    assert len(cells) == report.n_cells == sum(_measured(project.labels_for(i).labels) for i in ids[:2])
    assert "area_um2" in cells.columns and set(cells["set"]) == {"exp"}
    # no labels at all: nothing written when asked so
    empty = tmp_path / "empty"
    empty.mkdir()
    gen = export_events(project, [empty / "m.xlsx"], ["png"], empty, image_ids=[ids[2]], write_empty=False)
    assert any(isinstance(e, ExportFailed) and "nothing was written" in e.message for e in gen)
    assert list(empty.iterdir()) == []


def test_cli_export_per_image_files(project: Project, image_folder: Path, segmenter, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    ids = project.add_folder(image_folder, "exp").added
    list(segment_project(project, segmenter, "exp", image_ids=ids[:1]))
    stem = Path(project.get_image(ids[0]).name).stem
    root = project.root
    project.close()
    out = tmp_path / "x" / "all.xlsx"
    out.parent.mkdir()
    assert cli_main(["export", "--project", str(root), "--out", str(out), "--files", "jpeg"]) == 2
    assert "unknown format 'jpeg'" in capsys.readouterr().err and not out.exists()
    assert cli_main(["export", "--project", str(root), "--out", str(out), "--files", "tiff, roi"]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["all.xlsx", f"{stem}_labels.tif", f"{stem}_rois.zip"])
    assert "2 per-image file(s)" in capsys.readouterr().out
