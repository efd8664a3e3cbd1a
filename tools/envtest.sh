#!/usr/bin/env bash
# `make envtest`: finds or builds the real API server's binaries (kube-apiserver and etcd) for the
# tests and prints KUBEBUILDER_ASSETS=<dir> as its last line.
#
# The envtest convention first: a KUBEBUILDER_ASSETS that holds both binaries (from setup-envtest,
# say) is used as it is. Otherwise both are built from source through the Go module proxy
# (tools/gobuild.sh: pinned modules under tools/go/, cached under the user's cache dir) and linked
# into one directory per version.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  if [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then
    echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    exit 0
  fi
  echo "envtest: KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks kube-apiserver or etcd; building them instead" >&2
fi

apiserver=$("$here/gobuild.sh" kube-apiserver)
etcd=$("$here/gobuild.sh" etcd)
assets=${XDG_CACHE_HOME:-$HOME/.cache}/lambda-rollouts/envtest/$(basename "$(dirname "$apiserver")")
mkdir -p "$assets"
ln -sfn "$apiserver" "$assets/kube-apiserver"
ln -sfn "$etcd" "$assets/etcd"
echo "KUBEBUILDER_ASSETS=$assets"
