#!/usr/bin/env bash
# Package the Linux one-folder bundle (dist/efficell) as a .deb for Debian/Ubuntu.
#
#   pyinstaller --noconfirm build.spec          # -> dist/efficell/
#   installers/linux/make_deb.sh [flavour]       # -> dist/efficell_<version>_<flavour>_amd64.deb
#
# flavour: "cpu" (default) or "cuda": only a label in the package name/description; it must match
# the torch build the bundle was made with (docs/install.md). Installs to /opt/efficell with
# /usr/bin/efficell, a desktop entry, the icon and the project-file (.efficell) association.
# DEB_COMPRESSION: xz (default, smallest), gzip (fastest), zstd (needs dpkg >= 1.21.18 to install).
# Install: sudo apt install ./dist/efficell_<version>_cpu_amd64.deb    Remove: sudo apt remove efficell
set -euo pipefail
cd "$(dirname "$0")/../.."
flavour="${1:-cpu}"
bundle="dist/efficell"
[[ -x "$bundle/efficell" ]] || { echo "error: $bundle/efficell not found; run 'pyinstaller --noconfirm build.spec' first" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "error: dpkg-deb not found (Debian/Ubuntu: apt install dpkg)" >&2; exit 2; }
version="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' efficell_app/__init__.py)"
arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
out="dist/efficell_${version}_${flavour}_${arch}.deb"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
pkg="$stage/pkg"
mkdir -p "$pkg/DEBIAN" "$pkg/opt" "$pkg/usr/bin" "$pkg/usr/share/applications" "$pkg/usr/share/mime/packages" \
         "$pkg/usr/share/icons/hicolor/scalable/apps" "$pkg/usr/share/icons/hicolor/256x256/apps" "$pkg/usr/share/doc/efficell"
cp -a "$bundle" "$pkg/opt/efficell"
ln -s /opt/efficell/efficell "$pkg/usr/bin/efficell"
install -m 644 installers/linux/efficell.desktop "$pkg/usr/share/applications/efficell.desktop"
install -m 644 installers/linux/efficell-mime.xml "$pkg/usr/share/mime/packages/efficell.xml"
install -m 644 resources/icons/efficell.svg "$pkg/usr/share/icons/hicolor/scalable/apps/efficell.svg"
install -m 644 resources/icons/efficell.png "$pkg/usr/share/icons/hicolor/256x256/apps/efficell.png"
install -m 644 resources/samples/README.md "$pkg/usr/share/doc/efficell/SAMPLES.md"
installed_kb="$(du -sk "$pkg" | cut -f1)"

cat > "$pkg/DEBIAN/control" <<CONTROL
Package: efficell
Version: ${version}
Architecture: ${arch}
Maintainer: EffiCell contributors <efficell@invalid>
Installed-Size: ${installed_kb}
Depends: libc6 (>= 2.28), libgl1, libegl1, libfontconfig1, libdbus-1-3, libxkbcommon0, libxkbcommon-x11-0, libxcb-cursor0, libxcb-icccm4, libxcb-keysyms1, libxcb-image0, libxcb-render-util0, libxcb-shape0, libxcb-xinerama0, libxcb-xkb1
Section: science
Priority: optional
Description: cell segmentation on a frozen foundation-model encoder (${flavour} build)
 EffiCell segments, counts and measures cells and nuclei in microscopy images,
 and trains small adapters from a few annotated images. This package carries
 the ${flavour} build of PyTorch; run 'efficell --selftest' after installing.
CONTROL

for script in postinst postrm; do
  cat > "$pkg/DEBIAN/$script" <<'SCRIPT'
#!/bin/sh
set -e
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q /usr/share/applications || true
command -v update-mime-database >/dev/null 2>&1 && update-mime-database /usr/share/mime || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t /usr/share/icons/hicolor || true
exit 0
SCRIPT
  chmod 755 "$pkg/DEBIAN/$script"
done

mkdir -p dist
dpkg-deb --root-owner-group "-Z${DEB_COMPRESSION:-xz}" --build "$pkg" "$out.part" >/dev/null
mv "$out.part" "$out"
echo "wrote $out ($(du -h "$out" | cut -f1); installed ${installed_kb} KiB)"
