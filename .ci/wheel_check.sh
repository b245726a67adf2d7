#!/usr/bin/env bash
# CI: EffiCell installed like any Python package. Builds the wheel, installs it into a fresh virtual
# environment outside the checkout and, from another folder, runs `efficell --selftest` (built-in
# model + bundled samples) and `efficell segment` on a TIFF and, where ../shared/formats is there, a
# CZI. A file missing from the wheel (model, samples, a reader) fails here.
#
# The venv reuses the dependencies already installed (--system-site-packages: torch & co. are not
# installed twice; `pip install -e ".[test]"` ran before this) and the wheel is force-installed into
# it, so `efficell_app` is imported from the venv, never from the checkout (checked below).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
t0=$(date +%s)
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" . 2>&1 | grep -v '^WARNING: Location' || true
wheel="$(ls "$work"/dist/efficell-*.whl)"
python3 -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-deps --force-reinstall "$wheel" 2>&1 | grep -v '^WARNING: Location' || true
t1=$(date +%s)

cd "$work"   # another folder: nothing of the checkout on sys.path
mkdir images
cp "$root/tests/data/dsb2018_fluo/images/431b9b0c520a2837.tif" images/
czi="$root/../shared/formats/czi/nuc_small.czi"
[[ -f "$czi" ]] && cp "$czi" images/
run() { env -u PYTHONPATH -u EFFICELL_RESOURCES QT_QPA_PLATFORM=offscreen "$@"; }
run "$work/venv/bin/python" - "$work/venv" <<'PY'
import sys
import efficell_app
from efficell_app.core.resources import models_dir
where = efficell_app.__file__
assert where.startswith(sys.argv[1]), f"efficell_app imported from {where}, not from the installed wheel"
assert (models_dir() / "efficell_generalist.safetensors").is_file(), f"built-in adapter missing in {models_dir()}"
print(f"wheel: efficell_app from {where}; resources in {models_dir().parent}")
PY
run "$work/venv/bin/efficell" --selftest
run "$work/venv/bin/efficell" segment images --out "$work/out" --no-measure
n_in=$(find images -type f | wc -l); n_out=$(find "$work/out" -name '*_masks.tif' | wc -l)
[[ "$n_in" == "$n_out" ]] || { echo "wheel check: $n_out masks for $n_in images" >&2; exit 1; }
echo "wheel check: build + venv $((t1 - t0)) s, checks $(( $(date +%s) - t1 )) s; $(du -h "$wheel" | cut -f1) wheel, $n_out images segmented"
