#!/usr/bin/env bash
# CI: build the Linux CPU bundle and run its self-test offscreen with no Python on PATH.
#
#   .ci/bundle.sh            # exit 0 when the bundle builds, --version/info run and --selftest passes
#
# Uses a separate virtual environment (build/venv-cpu, reused between runs) holding the CPU-only
# torch, so the bundle stays lean (docs/install.md). Environment overrides:
#   EFFICELL_BUNDLE_VENV   venv folder (default build/venv-cpu)
#   TORCH_CPU_SPEC         torch requirement (default torch==2.13.0+cpu; the matching torchvision is chosen below)
#   TORCH_CPU_INDEX        index with CPU wheels, used when pip cannot find TORCH_CPU_SPEC on its own
#                          (default https://download.pytorch.org/whl/cpu)
# Prints build time and bundle size at the end (recorded in benchmarks/results/bundle.md).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${EFFICELL_BUNDLE_VENV:-build/venv-cpu}"
torch_spec="${TORCH_CPU_SPEC:-torch==2.13.0+cpu}"
torch_index="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
t0=$(date +%s)

if [[ ! -x "$venv/bin/pyinstaller" ]]; then
  python3 -m venv "$venv"
  # The CPU wheel comes from a local wheel house / configured index when there is one, else the PyTorch CPU index.
  "$venv/bin/pip" install -q "$torch_spec" || "$venv/bin/pip" install -q "$torch_spec" --extra-index-url "$torch_index"
  tv="$("$venv/bin/python" -c 'import torch; v=torch.__version__.split("+")[0].split("."); print(f"0.{int(v[1]) + 15}.*")')"
  "$venv/bin/pip" install -q "torchvision==$tv" --extra-index-url "$torch_index" || "$venv/bin/pip" install -q "torchvision==$tv"
  # EffiCell's other dependencies, as pyproject.toml lists them, without letting pip replace the CPU torch.
  mapfile -t deps < <("$venv/bin/python" -c 'import tomllib; print("\n".join(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] if not d.startswith(("torch", "torchvision"))))')
  "$venv/bin/pip" install -q "${deps[@]}" "pyinstaller>=6.10" "$torch_spec"
fi
t1=$(date +%s)
"$venv/bin/pyinstaller" --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller build.spec
t2=$(date +%s)

# The bundle must run without the build environment: empty environment, no Python on PATH.
run() { env -i PATH=/usr/bin:/bin HOME="$HOME" QT_QPA_PLATFORM=offscreen "$@"; }
home="$(mktemp -d)"; trap 'rm -rf "$home"' EXIT
run EFFICELL_HOME="$home" ./dist/efficell/efficell --version
run EFFICELL_HOME="$home" ./dist/efficell/efficell info >/dev/null
run EFFICELL_HOME="$home" ./dist/efficell/efficell --selftest
# The microscope-format readers made it into the bundle (native libraries included): read a CZI and an ND2.
formats="../shared/formats"
if [[ -d "$formats" ]]; then
  run EFFICELL_HOME="$home" ./dist/efficell/efficell segment "$formats/czi/nuc_small.czi" \
      "$formats/nd2/example-cerevisiae.nd2" --out "$home/formats" --no-measure
fi
t3=$(date +%s)

echo "bundle: venv $((t1 - t0)) s, pyinstaller $((t2 - t1)) s, checks $((t3 - t2)) s;" \
     "dist/efficell $(du -sh dist/efficell | cut -f1) ($(find dist/efficell -type f | wc -l) files)"
