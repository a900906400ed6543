#!/usr/bin/env bash
# Prepares a real Kubernetes control plane for the real-server tests, in the envtest
# layout (one directory holding etcd, kube-apiserver and kube-controller-manager), and
# prints that directory on stdout:
#
#   export KUBEBUILDER_ASSETS="$(scripts/envtest.sh SOURCE)"
#
# SOURCE holds kube-apiserver and kube-controller-manager v1.36, plain or .xz-compressed
# (SOURCE may be read-only: they are unpacked into a directory of our own). etcd comes
# from Debian's etcd-server. Idempotent: a second run only checks.
# Without SOURCE, controller-runtime's `setup-envtest use 1.36` gives kube-apiserver and
# etcd; the tests that need a controller manager then also want kube-controller-manager
# v1.36 copied into the printed directory.
set -euo pipefail

version=1.36.2
dest="${SPEECHOPS_ENVTEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/speechops-envtest/$version}"
source_dir="${1:-}"

if ! command -v etcd >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "installing etcd-server" >&2
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
fi

if [ -z "$source_dir" ]; then
    if ! command -v setup-envtest >/dev/null 2>&1; then
        echo "usage: $0 SOURCE_DIR  (a folder with kube-apiserver[.xz] and kube-controller-manager[.xz] v1.36)" >&2
        echo "   or: install setup-envtest (go install sigs.k8s.io/controller-runtime/tools/setup-envtest@latest)" >&2
        exit 2
    fi
    setup-envtest use 1.36 -p path
    exit 0
fi

mkdir -p "$dest"
for bin in kube-apiserver kube-controller-manager; do
    if [ -f "$source_dir/$bin.xz" ]; then
        src="$source_dir/$bin.xz"
    elif [ -f "$source_dir/$bin" ]; then
        src="$source_dir/$bin"
    else
        echo "$source_dir has no $bin or $bin.xz" >&2
        exit 1
    fi
    # Unpacked already (and not older than its source): keep it.
    if [ -x "$dest/$bin" ] && [ "$dest/$bin" -nt "$src" ]; then
        continue
    fi
    echo "unpacking $src into $dest" >&2
    case "$src" in
        *.xz) python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"), 1 << 20)' \
                  "$src" "$dest/$bin.tmp" ;;
        *) cp "$src" "$dest/$bin.tmp" ;;
    esac
    chmod +x "$dest/$bin.tmp"
    mv "$dest/$bin.tmp" "$dest/$bin"
done
ln -sf "$(command -v etcd)" "$dest/etcd"
"$dest/kube-apiserver" --version >&2
echo "$dest"
