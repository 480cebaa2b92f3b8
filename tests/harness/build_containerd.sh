#!/bin/sh
# Build containerd and ctr of one release from Go modules into a cache outside the repository:
#   build_containerd.sh 2.1.9 [CACHE_DIR]  ->  CACHE_DIR/containerd-2.1.9/{containerd,ctr,containerd-shim-runc-v2}
# Idempotent: does nothing when the binaries are there. Runs at the lowest CPU priority.
#
# `go install …@version` refuses containerd (its go.mod has exclude directives), so the module's own
# source is built as the main module, with exactly its go.mod and go.sum.
set -eu
version="$1"
cache="${2:-${PULLCHECK_CACHE:-$HOME/.cache/pullcheck}/bin}"
target="$cache/containerd-$version"
if [ -x "$target/containerd" ] && [ -x "$target/ctr" ] && [ -x "$target/containerd-shim-runc-v2" ]; then
  exit 0
fi
module="github.com/containerd/containerd/v2@v$version"
source_dir=$(go mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$source_dir" ] || { echo "could not download $module" >&2; exit 1; }
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -R "$source_dir" "$work/src"
chmod -R u+w "$work/src"
mkdir -p "$target.partial"
# CGO off and no btrfs/devmapper/zfs: the tests use the native snapshotter only.
(cd "$work/src" && GOFLAGS=-mod=mod CGO_ENABLED=0 nice -n 19 go build \
  -tags "no_btrfs no_devmapper no_zfs" -o "$target.partial/" ./cmd/containerd ./cmd/ctr ./cmd/containerd-shim-runc-v2)
rm -rf "$target"
mv "$target.partial" "$target"
