#!/bin/sh
# Renders the application icon to the PNG sizes of the hicolor theme (needs rsvg-convert: librsvg2-bin).
# The PNGs are committed; run this again after changing the SVG.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
id=io.github.checkpointbrowser.CheckpointBrowser
for size in 16 22 24 32 48 64 128 256; do
  mkdir -p "$here/hicolor/${size}x${size}/apps"
  rsvg-convert -w "$size" -h "$size" "$here/$id.svg" -o "$here/hicolor/${size}x${size}/apps/$id.png"
done
