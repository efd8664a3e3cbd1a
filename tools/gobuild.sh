#!/usr/bin/env bash
# Builds one Go program of tools/go/<name> (a pinned module: go.mod, go.sum, build.env) and
# prints the path of the binary. Binaries are cached under the user's cache dir, keyed by the
# module's files and the Go version, so a second call costs nothing; a missing Go is an error.
#
#   tools/gobuild.sh kube-apiserver   ->  ~/.cache/lambda-rollouts/go-tools/kube-apiserver-<key>/kube-apiserver
set -euo pipefail
name=${1:?usage: tools/gobuild.sh NAME}
here=$(cd "$(dirname "$0")" && pwd)
src=$here/go/$name
[ -f "$src/build.env" ] || { echo "gobuild: no tool named $name under $here/go" >&2; exit 2; }
command -v go >/dev/null || { echo "gobuild: Go is not installed; the tests build kube-apiserver, etcd, helm and kstatus with Go 1.26 (https://go.dev/dl)" >&2; exit 1; }

# Go 1.27 turns GOEXPERIMENT=jsonv2 on, which breaks kube-apiserver 1.36's OpenAPI handler:
# any other Go fetches 1.26 from the module proxy as the go command does for go.mod lines.
case "$(go env GOVERSION)" in
  go1.26*) ;;
  *) export GOTOOLCHAIN=go1.26.8 ;;
esac

# shellcheck source=/dev/null
. "$src/build.env"
key=$( (cd "$src" && cat go.mod go.sum build.env ./*.go 2>/dev/null; go env GOVERSION) | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/lambda-rollouts/go-tools
out=$cache/$name-$VERSION-$key
if [ ! -x "$out/$name" ]; then
  echo "gobuild: building $name $VERSION from the Go module proxy (once; cached in $cache)" >&2
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.build-$name.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$src" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags="-s -w $LDFLAGS" -o "$tmp/$name" "$PKG")
  rm -rf "$out"
  mv "$tmp" "$out"
  trap - EXIT
fi
echo "$out/$name"
