"""The desktop window (PySide6 + pyqtgraph): the only Qt code in EffiCell.

``app.main`` starts it; ``main_window`` wires the panels, the viewer, the dialogs and the
background workers together. Long work is a use case of :mod:`efficell_app.tasks` run by
:mod:`efficell_app.gui.workers` (superqt's thread workers); no slot calls a model directly.
"""
