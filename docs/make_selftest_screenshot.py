"""Screenshot of Help → Self-test for docs/install.md (runs the real self-test; seconds).

    python docs/make_selftest_screenshot.py [--out docs/images/selftest_dialog.png]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
log = logging.getLogger("screenshots")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "selftest_dialog.png")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["EFFICELL_HOME"] = tempfile.mkdtemp(prefix="efficell_shots_")  # default settings

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["efficell"])
    from efficell_app.gui.dialogs.selftest_dialog import SelftestDialog

    dlg = SelftestDialog()
    dlg.show()
    dlg.start()
    t0 = time.monotonic()
    while dlg.is_running():
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() - t0 > 300:
            raise TimeoutError("the self-test did not finish in 5 minutes")
    for _ in range(10):
        app.processEvents()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    dlg.grab().save(str(args.out))
    log.info("wrote %s (%s)", args.out, dlg.status.text())
    return 0 if dlg.report and dlg.report.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
