"""Project panel: image sets and their images, with status icons and thumbnails.

Each image is one row of two lines beside its thumbnail: the file name (with the plane of a
z-stack or time series), then its status and cell count, so a name gets the panel's whole width
(long names are shortened in the middle, keeping the end and the extension; the tooltip has
the full path).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QMenu,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..icons import array_to_icon, status_icon
from ..session import cells_text

ROLE_KIND = Qt.ItemDataRole.UserRole
ROLE_ID = Qt.ItemDataRole.UserRole + 1
ROLE_PATH = Qt.ItemDataRole.UserRole + 2
THUMB = 40
STATUS_WIDTH = 22  # the status dot's column


class ProjectPanel(QWidget):
    """Tree of sets -> images. Emits ``image_activated(image_id)`` when one is opened."""

    image_activated = Signal(int)
    segment_requested = Signal(str)  # "selection" | "set"
    remove_requested = Signal(list)  # image ids

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.header = QLabel("No project open. Drop a folder of images here to start.")
        self.header.setWordWrap(True)
        self.header.setStyleSheet("color: palette(placeholder-text); padding: 4px;")
        self.tree = QTreeWidget()
        self.tree.setColumnCount(2)
        self.tree.setHeaderHidden(True)
        self.tree.setIconSize(QSize(THUMB, THUMB))
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.tree.setIndentation(14)
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Fixed)
        header.resizeSection(1, STATUS_WIDTH)
        self.tree.itemActivated.connect(self._activated)
        self.tree.itemClicked.connect(self._activated)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._context_menu)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.header)
        layout.addWidget(self.tree, 1)
        self._items: dict[int, QTreeWidgetItem] = {}
        self._sets: dict[str, QTreeWidgetItem] = {}
        self._rows: dict[int, list[str]] = {}  # image id -> [name, status, detail, planes]

    # ------------------------------------------------------------------ content
    def set_project(self, project: Any | None) -> None:
        """Rebuild from a :class:`~efficell_app.project.Project` (None: empty)."""
        self.tree.clear()
        self._items.clear()
        self._sets.clear()
        self._rows.clear()
        if project is None:
            self.header.setText("No project open. Drop a folder of images here to start.")
            return
        self.header.setText(f"<b>{project.name}</b><br><span style='font-size:small'>{project.root}</span>")
        for s in project.list_sets():
            self.add_set(s.name)
        for rec in project.list_images():
            self.add_image(rec)
        # the counts recorded with the labels, until the table measures an image (then its own count)
        for image_id, n in project.stored_cell_counts().items():
            self.set_detail(image_id, cells_text(n))
        self.tree.expandAll()

    def add_set(self, name: str) -> QTreeWidgetItem:
        if name in self._sets:
            return self._sets[name]
        item = QTreeWidgetItem([name, ""])
        item.setData(0, ROLE_KIND, "set")
        item.setData(0, ROLE_ID, name)
        font = item.font(0)
        font.setBold(True)
        item.setFont(0, font)
        self.tree.addTopLevelItem(item)
        item.setExpanded(True)
        self._sets[name] = item
        return item

    def add_image(self, rec: Any) -> QTreeWidgetItem:
        """Add or update one image row from an ``ImageRecord``."""
        item = self._items.get(rec.id)
        if item is None:
            parent = self.add_set(rec.set_name)
            item = QTreeWidgetItem([rec.name, ""])
            item.setData(0, ROLE_KIND, "image")
            item.setData(0, ROLE_ID, int(rec.id))
            item.setToolTip(0, str(rec.path))
            parent.addChild(item)
            self._items[rec.id] = item
            self._rows[rec.id] = [item.text(0), "", "", _planes_text(rec)]  # the text is made by _render
            item.setData(0, ROLE_PATH, str(rec.path))
            self._update_set_count(rec.set_name)
        self.set_status(rec.id, rec.status)
        return item

    def _update_set_count(self, set_name: str) -> None:
        item = self._sets[set_name]
        n = item.childCount()
        item.setText(0, f"{set_name}  ({n} image{'s' if n != 1 else ''})")
        item.setToolTip(0, item.text(0))

    def set_status(self, image_id: int, status: str, detail: str | None = None) -> None:
        """Show an image's status (``detail``: e.g. its cell count; ``None`` keeps the one shown)."""
        item = self._items.get(image_id)
        if item is None:
            return
        row = self._rows[image_id]
        row[1] = status
        if detail is not None:
            row[2] = detail
        item.setIcon(1, status_icon(status))
        item.setData(1, ROLE_KIND, status)
        self._render(image_id)

    def set_detail(self, image_id: int, detail: str) -> None:
        """The second line's detail (the cell count the table shows) without changing the status."""
        if image_id in self._rows:
            self._rows[image_id][2] = detail
            self._render(image_id)

    def detail_of(self, image_id: int) -> str | None:
        row = self._rows.get(image_id)
        return None if row is None else row[2]

    def _render(self, image_id: int) -> None:
        item = self._items[image_id]
        name, status, detail, planes = self._rows[image_id]
        first = f"{name} ({planes})" if planes else name  # the plane is part of which image this is
        second = " · ".join(p for p in (status, detail) if p)
        item.setText(0, f"{first}\n{second}")
        tip = f"{item.data(0, ROLE_PATH)}{' (' + planes + ')' if planes else ''}\n{second}"
        item.setToolTip(0, tip)
        item.setToolTip(1, tip)

    def status_of(self, image_id: int) -> str | None:
        item = self._items.get(image_id)
        return None if item is None else item.data(1, ROLE_KIND)

    def set_thumbnail(self, image_id: int, rgb: Any) -> None:
        item = self._items.get(image_id)
        if item is not None:
            item.setIcon(0, array_to_icon(rgb))

    def remove_image(self, image_id: int) -> None:
        item = self._items.pop(image_id, None)
        self._rows.pop(image_id, None)
        if item is not None and item.parent() is not None:
            parent = item.parent()
            parent.removeChild(item)
            self._update_set_count(parent.data(0, ROLE_ID))

    def image_ids(self) -> list[int]:
        return list(self._items)

    # ------------------------------------------------------------------ selection
    def current_image(self) -> int | None:
        item = self.tree.currentItem()
        if item is None or item.data(0, ROLE_KIND) != "image":
            return None
        return int(item.data(0, ROLE_ID))

    def current_set(self) -> str | None:
        item = self.tree.currentItem()
        if item is None:
            return next(iter(self._sets), None)
        if item.data(0, ROLE_KIND) == "image":
            item = item.parent()
        return str(item.data(0, ROLE_ID))

    def selected_images(self) -> list[int]:
        """Images selected directly, plus all images of selected sets."""
        ids: list[int] = []
        for item in self.tree.selectedItems():
            if item.data(0, ROLE_KIND) == "image":
                ids.append(int(item.data(0, ROLE_ID)))
            else:
                ids.extend(int(item.child(i).data(0, ROLE_ID)) for i in range(item.childCount()))
        return list(dict.fromkeys(ids))

    def images_in_set(self, name: str) -> list[int]:
        item = self._sets.get(name)
        if item is None:
            return []
        return [int(item.child(i).data(0, ROLE_ID)) for i in range(item.childCount())]

    def select_image(self, image_id: int) -> None:
        item = self._items.get(image_id)
        if item is not None:
            self.tree.setCurrentItem(item)

    # ------------------------------------------------------------------ events
    def _activated(self, item: QTreeWidgetItem, _col: int = 0) -> None:
        if item.data(0, ROLE_KIND) == "image":
            self.image_activated.emit(int(item.data(0, ROLE_ID)))

    def _context_menu(self, pos: Any) -> None:
        if not self.tree.selectedItems():
            return
        menu = QMenu(self)
        seg = QAction("Segment selected images", menu)
        seg.triggered.connect(lambda: self.segment_requested.emit("selection"))
        rm = QAction("Remove from project", menu)
        rm.triggered.connect(lambda: self.remove_requested.emit(self.selected_images()))
        menu.addAction(seg)
        menu.addSeparator()
        menu.addAction(rm)
        menu.exec(self.tree.viewport().mapToGlobal(pos))


def _planes_text(rec: Any) -> str:
    """"z max", "z 3, t 2": the plane of a z-stack or time series the image was added with (1-based)."""
    planes = getattr(rec, "planes", None)
    return planes.describe() if planes is not None else ""
