#!/usr/bin/env bash
# Make a drag-to-Applications disk image from the PyInstaller .app (macOS only).
#
#   pyinstaller --noconfirm build.spec            # -> dist/EffiCell.app (BUNDLE step of build.spec)
#   installers/macos/make_dmg.sh [flavour]         # -> dist/EffiCell-<version>-<flavour>-macos-<arch>.dmg
#
# flavour: "mps" (default; the macOS torch wheel uses the Apple GPU through MPS, there is no CUDA on macOS).
# Signing/notarisation (optional): set CODESIGN_ID="Developer ID Application: ..." before running.
set -euo pipefail
cd "$(dirname "$0")/../.."
flavour="${1:-mps}"
app="dist/EffiCell.app"
[[ "$(uname)" == "Darwin" ]] || { echo "error: make_dmg.sh needs macOS (hdiutil)" >&2; exit 2; }
[[ -d "$app" ]] || { echo "error: $app not found; run 'pyinstaller --noconfirm build.spec' first" >&2; exit 1; }
version="$(python3 -c 'import re,sys; print(re.search(r"__version__ = \"(.+?)\"", open("efficell_app/__init__.py").read()).group(1))')"
arch="$(uname -m)"
out="dist/EffiCell-${version}-${flavour}-macos-${arch}.dmg"

if [[ -n "${CODESIGN_ID:-}" ]]; then
  codesign --deep --force --options runtime --timestamp --sign "$CODESIGN_ID" "$app"
fi

# The bundle must work before it is packed.
"$app/Contents/MacOS/efficell" --selftest

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp -R "$app" "$stage/"
ln -s /Applications "$stage/Applications"
rm -f "$out"
hdiutil create -volname "EffiCell ${version}" -srcfolder "$stage" -ov -format UDZO -fs HFS+ "$out"
echo "wrote $out ($(du -h "$out" | cut -f1))"
