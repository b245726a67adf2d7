"""Dialogs: export, models (encoder weights), application settings."""


def path_row(edit, on_browse):  # noqa: ANN001, ANN201 - Qt types are imported lazily (this package is imported by gui.app)
    """A path field with its "Browse…" button beside it, as one row of a form (a ``QHBoxLayout``)."""
    from PySide6.QtWidgets import QHBoxLayout, QPushButton

    browse = QPushButton("Browse…")
    browse.clicked.connect(on_browse)
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(browse)
    return row
