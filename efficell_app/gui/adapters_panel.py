"""The project's adapter library: list, rename, delete, export to a file, import another lab's file.

An imported file is checked before it enters the library: it must be an EffiCell adapter
(``adapter_io.read_adapter_meta``), for an encoder this EffiCell knows, with the feature
shapes of that encoder, and for the same encoder weights when those are installed
(``adapter_io.check_compatible``). Otherwise it is refused with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QInputDialog,
    QLabel,
    QMessageBox,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import AdapterError, EffiCellError

log = logging.getLogger(__name__)


def validate_adapter_file(path: str | Path) -> Any:
    """The file's ``AdapterMeta`` if it fits an encoder of this EffiCell; ``AdapterError`` with the reason if not."""
    from ..core.encoders import get_spec
    from ..core.encoders.registry import build_backbone
    from ..core.model.adapter_io import check_compatible, read_adapter_meta

    path = Path(path)
    meta = read_adapter_meta(path)
    try:
        spec = get_spec(meta.encoder)
    except KeyError as exc:
        raise AdapterError(path, f"it was trained for encoder '{meta.encoder}', which this EffiCell does not have") from exc
    backbone = build_backbone(spec.name, device="meta")
    want = tuple(int(c) for c in backbone.out_channels)
    if tuple(meta.in_channels) != want or int(meta.stride) != int(backbone.stride):
        raise AdapterError(path, f"its feature shapes ({list(meta.in_channels)}, stride {meta.stride}) do not match "
                                 f"encoder '{spec.name}' ({list(want)}, stride {backbone.stride})")
    installed = _installed_sha(spec)
    if installed is not None and meta.encoder_sha256 not in (installed, "random"):
        check_compatible(meta, path, spec.name, installed)
    return meta


def _installed_sha(spec: Any) -> str | None:
    from ..core.encoders import weights

    try:
        if weights.is_present(spec):
            return weights.known_sha256(spec)
    except (OSError, EffiCellError) as exc:
        log.debug("weights of %s not checked: %s", spec.name, exc)
    return None


class AdaptersPanel(QWidget):
    """Adapters of the open project. ``changed`` after any change to the library."""

    changed = Signal()

    def __init__(self, project_getter: Callable[[], Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._project = project_getter
        # One row of two lines per adapter, the name on the first with the panel's whole width
        # (names are long: "adapter 2024-03-12 14:03"), its score and training images on the
        # second; encoder, date and file in the tooltip.
        self.tree = QTreeWidget()
        self.tree.setColumnCount(1)
        self.tree.setHeaderHidden(True)
        self.tree.setRootIsDecorated(False)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.tree.itemSelectionChanged.connect(self._selection)
        self.buttons: dict[str, QPushButton] = {}
        row = QGridLayout()  # two by two: the panel stays narrow enough to sit beside the image
        for i, (key, text, slot) in enumerate((("rename", "Rename…", self.rename), ("delete", "Delete", self.delete),
                                               ("export", "Export…", self.export),
                                               ("import", "Import…", self.import_file))):
            b = QPushButton(text)
            b.clicked.connect(lambda _=False, s=slot: s())
            self.buttons[key] = b
            row.addWidget(b, i // 2, i % 2)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addWidget(self.tree, 1)
        lay.addLayout(row)
        lay.addWidget(self.message)
        self.refresh()

    def refresh(self) -> None:
        keep = self.selected_id()
        self.tree.clear()
        project = self._project()
        if project is None:
            self._selection()
            return
        for a in project.list_adapters():
            val = (a.metrics or {}).get("validation") or {}
            ap = val.get("ap50") if isinstance(val, dict) else None
            n = len(a.training_images)
            score = "no validation score" if ap is None else f"AP@0.5 {float(ap):.3f}"
            trained = f" · trained on {n} image{'s' if n != 1 else ''}" if n else ""
            item = QTreeWidgetItem([f"{a.name}\n{score}{trained}"])
            item.setData(0, Qt.ItemDataRole.UserRole, a.id)
            item.setToolTip(0, f"{a.name}\nencoder {a.encoder}\ncreated {a.created[:16].replace('T', ' ')}\n"
                            + (f"trained on {', '.join(a.training_images)}\n" if n else "") + str(a.path))
            self.tree.addTopLevelItem(item)
        if keep is not None:
            self.select(keep)
        self._selection()

    def selected_id(self) -> int | None:
        items = self.tree.selectedItems()
        return int(items[0].data(0, Qt.ItemDataRole.UserRole)) if items else None

    def select(self, adapter_id: int) -> None:
        for i in range(self.tree.topLevelItemCount()):
            it = self.tree.topLevelItem(i)
            if int(it.data(0, Qt.ItemDataRole.UserRole)) == adapter_id:
                self.tree.setCurrentItem(it)

    def _selection(self) -> None:
        has = self.selected_id() is not None
        for k in ("rename", "delete", "export"):
            self.buttons[k].setEnabled(has)
        self.buttons["import"].setEnabled(self._project() is not None)

    def _run(self, fn: Callable[[], Any], ok: str) -> Any:
        try:
            out = fn()
        except (EffiCellError, KeyError, OSError) as exc:
            self.message.setText(f"<span style='color:#dc2626'>{exc}</span>")
            return None
        self.message.setText(ok)
        self.refresh()
        self.changed.emit()
        return out

    def rename(self, new_name: str | None = None) -> Any:
        aid = self.selected_id()
        if aid is None:
            return None
        project = self._project()
        if new_name is None:
            new_name, ok = QInputDialog.getText(self, "Rename adapter", "New name:", text=project.get_adapter(aid).name)
            if not ok:
                return None
        return self._run(lambda: project.rename_adapter(aid, new_name), f"Renamed to '{new_name}'")

    def delete(self, confirm: bool = True) -> None:
        aid = self.selected_id()
        if aid is None:
            return
        project = self._project()
        name = project.get_adapter(aid).name
        if confirm and QMessageBox.question(self, "Delete adapter", f"Delete the adapter '{name}' from the project? "
                                            "Results made with it are kept.") != QMessageBox.StandardButton.Yes:
            return
        self._run(lambda: project.delete_adapter(aid), f"Deleted '{name}'")

    def export(self, dest: str | Path | None = None) -> Path | None:
        aid = self.selected_id()
        if aid is None:
            return None
        project = self._project()
        if dest is None:
            name = project.get_adapter(aid).name
            dest, _ = QFileDialog.getSaveFileName(self, "Export adapter", f"{name}.safetensors",
                                                  "EffiCell adapters (*.safetensors)")
            if not dest:
                return None
        return self._run(lambda: project.export_adapter(aid, dest), f"Exported to {dest}")

    def import_file(self, path: str | Path | None = None) -> Any:
        project = self._project()
        if project is None:
            return None
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Import an adapter", "", "EffiCell adapters (*.safetensors);;All files (*)")
            if not path:
                return None

        def do() -> Any:
            validate_adapter_file(path)
            return project.import_adapter(path)

        info = self._run(do, f"Imported '{Path(path).name}'")
        if info is not None:
            self.message.setText(f"Imported as '{info.name}' (encoder {info.encoder})")
            self.select(info.id)
        return info
