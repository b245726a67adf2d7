"""Which plane of a z-stack or time series to segment: asked when such files are added.

EffiCell segments one 2-D (multi-channel) image per file. For a z-stack that is one z-plane
or the maximum projection; for a time series one time point. The choice is recorded with
each image in the project (``ImageRecord.planes``), so segmenting, measuring and exporting
all read the same plane. Planes are numbered from 1 here, as in Fiji.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QGridLayout,
    QGroupBox,
    QLabel,
    QListWidget,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...core.images import PlaneChoice

_WORDS = {"Z": "z-planes", "T": "time points"}


def describe_stack(path: Path, sizes: dict[str, int]) -> str:
    """"cells.tif: 12 z-planes, 5 time points"."""
    return f"{path.name}: " + ", ".join(f"{n} {_WORDS.get(ax, 'planes')}" for ax, n in sizes.items())


class PlanesDialog(QDialog):
    """Asks for the z-plane (or maximum projection) and time point of the stacks ``stacks``
    (file -> ``{"Z": n, "T": m}``); :meth:`choice` is the answer for all of them."""

    def __init__(self, stacks: dict[Path, dict[str, int]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("z-stacks and time series")
        self.stacks = dict(stacks)
        n_z = max((sizes.get("Z", 0) for sizes in stacks.values()), default=0)
        n_t = max((sizes.get("T", 0) for sizes in stacks.values()), default=0)
        n = len(stacks)
        intro = QLabel(f"{n} file{'s hold' if n != 1 else ' holds'} more than one plane. EffiCell segments one "
                       "2-D image per file: choose which one to use. The choice is kept with each image.")
        intro.setWordWrap(True)
        files = QListWidget()
        files.addItems([describe_stack(p, s) for p, s in sorted(stacks.items())])
        files.setMaximumHeight(min(160, 24 + 20 * n))

        self.z_box = QGroupBox("z-stack")
        self.z_max = QRadioButton("Maximum projection (brightest value through the stack)")
        self.z_one = QRadioButton("One plane:")
        self.z_plane = QSpinBox()
        self.z_plane.setRange(1, max(1, n_z))
        self.z_plane.setValue(max(1, (n_z + 1) // 2))
        self.z_plane.setPrefix("plane ")
        self.z_plane.setSuffix(f" of {n_z}")
        group = QButtonGroup(self)
        group.addButton(self.z_max)
        group.addButton(self.z_one)
        self.z_max.setChecked(True)
        self.z_plane.setEnabled(False)
        self.z_one.toggled.connect(self.z_plane.setEnabled)
        zl = QGridLayout(self.z_box)
        zl.addWidget(self.z_max, 0, 0, 1, 2)
        zl.addWidget(self.z_one, 1, 0)
        zl.addWidget(self.z_plane, 1, 1)
        self.z_box.setVisible(n_z > 0)

        self.t_box = QGroupBox("Time series")
        self.t_point = QSpinBox()
        self.t_point.setRange(1, max(1, n_t))
        self.t_point.setPrefix("time point ")
        self.t_point.setSuffix(f" of {n_t}")
        tl = QGridLayout(self.t_box)
        tl.addWidget(QLabel("Segment"), 0, 0)
        tl.addWidget(self.t_point, 0, 1)
        self.t_box.setVisible(n_t > 0)

        note = QLabel("A file whose planes are not labelled is read as a z-stack. A plane a file does not have "
                      "is reported under Problems.")
        note.setWordWrap(True)
        note.setStyleSheet("color: palette(placeholder-text);")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText(f"Add {n} file{'s' if n != 1 else ''}")
        buttons.button(QDialogButtonBox.StandardButton.Cancel).setText("Leave them out")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.buttons = buttons
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(files)
        layout.addWidget(self.z_box)
        layout.addWidget(self.t_box)
        layout.addWidget(note)
        layout.addWidget(buttons)
        self.setMinimumWidth(460)

    def choice(self) -> PlaneChoice:
        """The planes to read (0-based, as ``core.images`` counts them)."""
        z: int | str | None = None
        if any("Z" in s for s in self.stacks.values()):
            z = "max" if self.z_max.isChecked() else int(self.z_plane.value()) - 1
        t = int(self.t_point.value()) - 1 if any("T" in s for s in self.stacks.values()) else None
        return PlaneChoice(z=z, t=t)
