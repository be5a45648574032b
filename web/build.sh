#!/bin/sh
# Copy the UI source (web/src/) to web/dist/, which the Nexus binary embeds
# with rust-embed. No bundling, no stamping: dist is an exact copy of src.
set -eu

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)

rm -rf "$here/dist"
mkdir -p "$here/dist"
cp -R "$here/src/." "$here/dist/"

echo "web/dist updated from web/src"
