"""Regenerate the self-test expectation from the current built-in model.

Run from the repository root after shipping a new built-in model
(``resources/models/efficell_generalist.safetensors`` + ``efficell_compact_encoder.safetensors``):

    python resources/samples/make_selftest_expectation.py

It segments the self-test sample at the cell diameter of its human annotation (CPU, so the
expectation does not depend on a GPU) and writes ``selftest_expected.json`` and
``selftest_expected_labels.tif`` beside this script. Then check ``efficell --selftest``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> int:
    from efficell_app.core.errors import EffiCellError
    from efficell_app.core.pipeline import Segmenter
    from efficell_app.selftest import DEFAULT_SAMPLE, make_expectation

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", default=DEFAULT_SAMPLE, help="image inside resources/samples/ (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="device to make it on (default: cpu)")
    a = p.parse_args(argv)
    image = HERE / a.sample
    annotation = HERE / "masks" / image.name
    try:
        seg = Segmenter.load(None, device=a.device)
        path = make_expectation(seg, image, HERE, annotation=annotation if annotation.exists() else None)
    except EffiCellError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    print(json.dumps(json.loads(path.read_text()), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
