"""Adapter library panel (rename, delete, export, import with validation) and "annotate next"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from efficell_app.core.errors import AdapterError


def _rewrite_meta(src: Path, dst: Path, **changes: object) -> Path:
    """A copy of an adapter file whose EffiCell metadata has some fields changed."""
    raw = src.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["efficell"])
    meta.update(changes)
    header["__metadata__"]["efficell"] = json.dumps(meta)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    dst.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + n :])
    return dst


def test_adapters_panel_library_operations(qtbot, tmp_path: Path, small_adapter: Path) -> None:
    from efficell_app.gui.adapters_panel import AdaptersPanel, validate_adapter_file
    from efficell_app.project import Project

    with Project.create(tmp_path / "proj") as p:
        panel = AdaptersPanel(lambda: p)
        qtbot.addWidget(panel)
        assert panel.tree.topLevelItemCount() == 0 and not panel.buttons["export"].isEnabled()
        with qtbot.waitSignal(panel.changed):
            info = panel.import_file(small_adapter)
        assert info is not None and info.encoder == "efficell_compact"
        assert panel.tree.topLevelItemCount() == 1 and panel.selected_id() == info.id
        panel.rename("from the lab next door")
        assert p.get_adapter(info.id).name == "from the lab next door"
        out = panel.export(tmp_path / "shared.safetensors")
        assert out is not None and out.is_file()
        assert validate_adapter_file(out).encoder == "efficell_compact"
        # refused with a reason, library unchanged
        wrong_enc = _rewrite_meta(small_adapter, tmp_path / "sam.safetensors", encoder="sam_vit_b")
        with pytest.raises(AdapterError, match="feature shapes"):
            validate_adapter_file(wrong_enc)
        assert panel.import_file(wrong_enc) is None and "feature shapes" in panel.message.text()
        other_weights = _rewrite_meta(small_adapter, tmp_path / "w.safetensors", encoder_sha256="0" * 64)
        with pytest.raises(AdapterError, match="other weights"):  # the built-in encoder's weights are always here
            validate_adapter_file(other_weights)
        unknown = _rewrite_meta(small_adapter, tmp_path / "x.safetensors", encoder="mystery_net")
        assert panel.import_file(unknown) is None and "does not have" in panel.message.text()
        junk = tmp_path / "junk.safetensors"
        junk.write_bytes(b"not an adapter at all")
        assert panel.import_file(junk) is None
        assert len(p.list_adapters()) == 1
        # import the exported file again: a second entry with a free name
        again = panel.import_file(out)
        assert again is not None and again.name != "from the lab next door"
        panel.select(again.id)
        panel.delete(confirm=False)
        assert [a.name for a in p.list_adapters()] == ["from the lab next door"]


def test_annotate_next_ranks_unannotated_images(window, qtbot, image_folder: Path) -> None:
    tools = window.annotation
    window.seg_panel.auto_segment.setChecked(False)
    from efficell_app.project import Project

    folder = image_folder.parent / "proj"
    with Project.create(folder) as p:
        ids = p.add_folder(image_folder, "set").added
        import numpy as np

        p.save_annotation(ids[0], np.zeros((p.get_image(ids[0]).height, p.get_image(ids[0]).width), np.int32))
    assert window.open_project(folder)
    dlg = tools.open_suggestions()
    qtbot.addWidget(dlg)
    # the outcome is set as the work ends; the events are delivered by then once the dialog saw "finished"
    qtbot.waitUntil(lambda: dlg.handle is not None and not dlg.cancel_button.isEnabled(), timeout=60_000)
    assert dlg.handle.outcome == "finished"
    assert [int(s.key) for s in dlg.results] == ids[1:]  # the annotated image is not a candidate
    assert dlg.table.rowCount() == len(ids) - 1
    scores = [float(dlg.table.item(r, 2).text()) for r in range(dlg.table.rowCount())]
    assert scores == sorted(scores, reverse=True)
    dlg.open_row(0)
    assert window.current_image == ids[1]
