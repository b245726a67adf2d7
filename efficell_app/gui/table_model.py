"""A sortable Qt table model over a pandas DataFrame (no per-cell widget items)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

if TYPE_CHECKING:
    import pandas as pd

_Index = QModelIndex | QPersistentModelIndex


def format_value(value: Any) -> str:
    """Numbers as a scientist reads them: integers plain, floats with 4 significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    try:  # numpy scalars
        import numpy as np

        if isinstance(value, np.integer):
            return str(int(value))
        if isinstance(value, np.floating):
            return format_value(float(value))
    except ImportError:  # pragma: no cover
        pass
    return str(value)


class DataFrameModel(QAbstractTableModel):
    """Read-only view of a DataFrame; sorting reorders the frame (stable, NaN last).

    ``id_column`` names the column that identifies a cell (its label in the label image),
    used to keep the table and the viewer's selection in step.
    """

    def __init__(self, id_column: str = "label", parent: Any = None) -> None:
        super().__init__(parent)
        self._df: pd.DataFrame | None = None
        self._cols: list[str] = []
        self._values: list[list[Any]] = []
        self.id_column = id_column
        self._row_of_id: dict[int, int] = {}

    # ---- data in / out
    def set_frame(self, df: pd.DataFrame | None) -> None:
        self.beginResetModel()
        self._df = None if df is None else df.reset_index(drop=True)
        self._refresh_cache()
        self.endResetModel()

    def frame(self) -> pd.DataFrame | None:
        return self._df

    def _refresh_cache(self) -> None:
        df = self._df
        if df is None:
            self._cols, self._values, self._row_of_id = [], [], {}
            return
        self._cols = [str(c) for c in df.columns]
        # Column-major Python lists: data() is then a cheap lookup, no pandas per cell.
        self._values = [df[c].tolist() for c in df.columns]
        self._row_of_id = {}
        if self.id_column in df.columns:
            for row, v in enumerate(self._values[self._cols.index(self.id_column)]):
                try:
                    self._row_of_id[int(v)] = row
                except (TypeError, ValueError):
                    continue

    def row_for_id(self, cell_id: int) -> int | None:
        return self._row_of_id.get(int(cell_id))

    def id_for_row(self, row: int) -> int | None:
        if self.id_column not in self._cols or not 0 <= row < self.rowCount():
            return None
        try:
            return int(self._values[self._cols.index(self.id_column)][row])
        except (TypeError, ValueError):
            return None

    def columns(self) -> list[str]:
        return list(self._cols)

    # ---- Qt interface
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() or self._df is None else len(self._df)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._cols)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        value = self._values[index.column()][index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return format_value(value)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            if isinstance(value, str):
                return int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.UserRole:
            return value
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self._cols[section] if section < len(self._cols) else None
        return str(section + 1)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        if self._df is None or not 0 <= column < len(self._cols):
            return
        self.layoutAboutToBeChanged.emit()
        name = self._df.columns[column]
        self._df = self._df.sort_values(
            name, ascending=order == Qt.SortOrder.AscendingOrder, kind="mergesort", na_position="last"
        ).reset_index(drop=True)
        self._refresh_cache()
        self.layoutChanged.emit()
