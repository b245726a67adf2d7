"""Measurements: a sortable per-cell table, a histogram or scatter of any column, per-image summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QItemSelectionModel, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..table_model import DataFrameModel

if TYPE_CHECKING:
    import pandas as pd

ID_COLUMN = "cell_id"
IMAGE_COLUMN = "image_id"


def _is_numeric(series: Any) -> bool:
    """Numbers worth plotting (not text, not yes/no flags); works with pandas' own dtypes."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return bool(is_numeric_dtype(series.dtype) and not is_bool_dtype(series.dtype))


MAX_TEXT_COLUMN = 460  # px: a text column (image names) is as wide as its longest value, up to this


def _fit_columns(view: QTableView, df: pd.DataFrame | None, new_columns: bool = True) -> None:
    """Column widths from the header text and, for text columns (image and set names), their
    longest value, so names are shown whole (cheap: a few hundred distinct values measured).
    With the same columns as before only text columns change, and only to grow (a width the
    user set stays)."""
    if df is None:
        return
    from pandas.api.types import is_bool_dtype

    header = view.horizontalHeader()
    fm = header.fontMetrics()
    cell_fm = view.fontMetrics()
    for i, name in enumerate(df.columns):
        text = not _is_numeric(df[name]) and not is_bool_dtype(df[name].dtype)
        if not new_columns and not text:
            continue
        width = fm.horizontalAdvance(str(name)) + 24
        if text:
            values = df[name].drop_duplicates().head(300)
            width = max(width, max((cell_fm.horizontalAdvance(str(v)) for v in values), default=0) + 16)
        width = min(max(64, width), MAX_TEXT_COLUMN)
        if new_columns or width > header.sectionSize(i):
            header.resizeSection(i, width)


def _table() -> QTableView:
    view = QTableView()
    view.setSortingEnabled(True)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setAlternatingRowColors(True)
    view.verticalHeader().setDefaultSectionSize(20)
    view.horizontalHeader().setStretchLastSection(True)
    # Size columns from the header and the first rows only: measuring thousands of rows would
    # stall the window (each data() call competes for the GIL with a running segmentation).
    view.horizontalHeader().setResizeContentsPrecision(25)
    view.verticalHeader().setResizeContentsPrecision(1)
    return view


class MeasurementsPanel(QWidget):
    """Emits ``cell_selected(image_id, label)`` when a table row (or scatter point) is picked."""

    cell_selected = Signal(int, int)
    scope_changed = Signal(str)  # "image" | "set"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scope = QComboBox()
        self.scope.addItem("Current image", "image")
        self.scope.addItem("Current set", "set")
        self.scope.currentIndexChanged.connect(lambda: self.scope_changed.emit(self.scope.currentData()))
        self.count = QLabel("")

        self.model = DataFrameModel(ID_COLUMN)
        self.table = _table()
        self.table.setModel(self.model)
        self.table.selectionModel().selectionChanged.connect(self._row_selected)

        self.kind = QComboBox()
        self.kind.addItems(["Histogram", "Scatter"])
        self.x_col = QComboBox()
        self.y_col = QComboBox()
        for w in (self.kind, self.x_col, self.y_col):
            w.currentIndexChanged.connect(self._replot)
        self.plot = pg.PlotWidget(background=(250, 250, 250))
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setMinimumHeight(160)
        self._scatter: pg.ScatterPlotItem | None = None
        plot_page = QWidget()
        pl = QVBoxLayout(plot_page)
        row = QHBoxLayout()
        row.addWidget(self.kind)
        row.addWidget(QLabel("x"))
        row.addWidget(self.x_col, 1)
        self.y_label = QLabel("y")
        row.addWidget(self.y_label)
        row.addWidget(self.y_col, 1)
        pl.addLayout(row)
        pl.addWidget(self.plot, 1)

        self.summary_model = DataFrameModel(IMAGE_COLUMN)
        self.summary = _table()
        self.summary.setModel(self.summary_model)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.table, "Cells")
        self.tabs.addTab(plot_page, "Plot")
        self.tabs.addTab(self.summary, "Per image")

        top = QHBoxLayout()
        top.addWidget(QLabel("Show"))
        top.addWidget(self.scope)
        top.addStretch(1)
        top.addWidget(self.count)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addWidget(self.tabs, 1)
        self._syncing = False

    # ------------------------------------------------------------------ content
    def current_scope(self) -> str:
        return str(self.scope.currentData())

    def set_cells(self, df: pd.DataFrame | None, measuring: int = 0) -> None:
        """Per-cell rows (must have ``label``; set scope also ``image_id``); ``measuring``: images of
        the scope still being measured (the count says so)."""
        old_cols = self.model.columns()
        self.model.set_frame(df)
        _fit_columns(self.table, df, self.model.columns() != old_cols)
        if self.model.columns() != old_cols:
            for i, c in enumerate(self.model.columns()):  # internal id: the image name is shown instead
                self.table.setColumnHidden(i, c == IMAGE_COLUMN)
        n = 0 if df is None else len(df)
        self.count.setText(f"{n} cells" + (f" (measuring {measuring} image{'s' if measuring != 1 else ''}…)"
                                           if measuring else ""))
        numeric = [] if df is None else [c for c in df.columns if _is_numeric(df[c])
                                         and c not in (ID_COLUMN, IMAGE_COLUMN)]
        for box, pick in ((self.x_col, lambda c: c.startswith("area")), (self.y_col, lambda c: c.endswith("_mean"))):
            current = box.currentText()
            box.blockSignals(True)
            box.clear()
            box.addItems(numeric)
            i = box.findText(current) if current else -1
            if i < 0:
                i = next((k for k, c in enumerate(numeric) if pick(c)), 0)
            box.setCurrentIndex(i)
            box.blockSignals(False)
        self._replot()

    def set_summary(self, df: pd.DataFrame | None) -> None:
        old_cols = self.summary_model.columns()
        self.summary_model.set_frame(df)
        _fit_columns(self.summary, df, self.summary_model.columns() != old_cols)
        if self.summary_model.columns() != old_cols:
            for i, c in enumerate(self.summary_model.columns()):
                self.summary.setColumnHidden(i, c == IMAGE_COLUMN)

    def frame(self) -> pd.DataFrame | None:
        return self.model.frame()

    # ------------------------------------------------------------------ selection sync
    def select_cell(self, label: int, image_id: int | None = None) -> None:
        """Select the row of ``label`` (of ``image_id`` in set scope) without re-emitting."""
        row = self._row_of(label, image_id)
        self._syncing = True
        try:
            sel = self.table.selectionModel()
            if row is None:
                sel.clearSelection()
            else:
                idx = self.model.index(row, 0)
                sel.select(idx, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
                sel.setCurrentIndex(idx, QItemSelectionModel.SelectionFlag.NoUpdate)
                self.table.scrollTo(idx, QAbstractItemView.ScrollHint.PositionAtCenter)
        finally:
            self._syncing = False
        self._mark_scatter(row)

    def selected_row(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() if rows else None

    def _row_of(self, label: int, image_id: int | None) -> int | None:
        df = self.model.frame()
        if df is None or label <= 0:
            return None
        if image_id is None or IMAGE_COLUMN not in df.columns:
            return self.model.row_for_id(label)
        hits = np.flatnonzero((df[ID_COLUMN].to_numpy() == label) & (df[IMAGE_COLUMN].to_numpy() == image_id))
        return int(hits[0]) if hits.size else None

    def _row_selected(self) -> None:
        if self._syncing:
            return
        row = self.selected_row()
        if row is not None:
            self._emit_row(row)

    def _emit_row(self, row: int) -> None:
        df = self.model.frame()
        if df is None:
            return
        label = self.model.id_for_row(row)
        image_id = int(df[IMAGE_COLUMN].iloc[row]) if IMAGE_COLUMN in df.columns else -1
        if label is not None:
            self._mark_scatter(row)
            self.cell_selected.emit(image_id, label)

    # ------------------------------------------------------------------ plot
    def _replot(self) -> None:
        self.plot.clear()
        self._scatter = None
        df = self.model.frame()
        scatter = self.kind.currentText() == "Scatter"
        self.y_col.setVisible(scatter)
        self.y_label.setVisible(scatter)
        xcol = self.x_col.currentText()
        if df is None or not xcol or xcol not in df.columns or len(df) == 0:
            return
        x = df[xcol].to_numpy(dtype=float)
        pi = self.plot.getPlotItem()
        pi.setLabel("bottom", xcol)
        if not scatter:
            finite = x[np.isfinite(x)]
            if finite.size == 0:
                return
            bins = int(np.clip(np.sqrt(finite.size) * 2, 5, 80))
            counts, edges = np.histogram(finite, bins=bins)
            self.plot.addItem(pg.PlotDataItem(edges, counts, stepMode="center", fillLevel=0,
                                              brush=(59, 130, 246, 140), pen=pg.mkPen(30, 64, 175)))
            pi.setLabel("left", "cells")
            return
        ycol = self.y_col.currentText()
        if ycol not in df.columns:
            return
        y = df[ycol].to_numpy(dtype=float)
        self._scatter = pg.ScatterPlotItem(x=x, y=y, data=np.arange(len(x)), size=6,
                                           pen=pg.mkPen(30, 64, 175, 200), brush=pg.mkBrush(59, 130, 246, 120))
        self._scatter.sigClicked.connect(self._point_clicked)
        self.plot.addItem(self._scatter)
        pi.setLabel("left", ycol)
        self._mark_scatter(self.selected_row())

    def _mark_scatter(self, row: int | None) -> None:
        if self._scatter is None:
            return
        n = len(self._scatter.data)
        brushes = [pg.mkBrush(59, 130, 246, 120)] * n
        sizes = np.full(n, 6.0)
        if row is not None and 0 <= row < n:
            brushes[row] = pg.mkBrush(220, 38, 38, 255)
            sizes[row] = 11.0
        self._scatter.setBrush(brushes)
        self._scatter.setSize(sizes)

    def _point_clicked(self, _item: Any, points: Any, *_args: Any) -> None:
        if len(points):
            row = int(points[0].data())
            self._syncing = True
            try:
                idx = self.model.index(row, 0)
                self.table.selectionModel().select(
                    idx, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
                self.table.scrollTo(idx)
            finally:
                self._syncing = False
            self._emit_row(row)
