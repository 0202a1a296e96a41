#!/bin/sh
# daemon/www/fetch_uplot.sh NPM OUT_JS OUT_CSS: fetch uPlot (a pinned
# version) from the npm registry and copy its IIFE build and stylesheet.
# Offline or on any failure both are left empty and the page uses its own canvas charts: the build never
# fails because the registry is out of reach.
NPM=$1
OUT=$2
CSS=$3
VERSION=1.6.31
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: > "$OUT"
: > "$CSS"
if (cd "$tmp" && timeout 60 "$NPM" pack "uplot@$VERSION" --silent >/dev/null 2>&1) &&
   tar -xzf "$tmp"/uplot-*.tgz -C "$tmp" package/dist/uPlot.iife.min.js package/dist/uPlot.min.css 2>/dev/null; then
    cp "$tmp/package/dist/uPlot.iife.min.js" "$OUT"
    cp "$tmp/package/dist/uPlot.min.css" "$CSS"
else
    echo "fetch_uplot: npm pack uplot@$VERSION failed; the page draws its own charts" >&2
fi
exit 0
