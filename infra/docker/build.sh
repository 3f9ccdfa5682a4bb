#!/usr/bin/env bash
# Build the `dsnet` image from infra/docker/Dockerfile with podman or docker, whichever is
# present (podman first). Run from anywhere; the build context is the repository root.
#
#   infra/docker/build.sh [options]
#
#   --tag NAME             image name (default localhost/dsnet:dev)
#   --variant cuda|cpu     build arg TORCH_VARIANT (default cuda)
#   --torch-index URL      build arg TORCH_INDEX_URL: the PyTorch CPU wheel index (cpu variant)
#   --wheels DIR           a local folder of wheel files that pip takes before the package
#                          index (torch, torchvision, the CUDA libraries), so a build does not
#                          download gigabytes; versions still come from the lock
#   --python-image IMAGE   build arg PYTHON_IMAGE, the base of both stages
#                          (default: the Dockerfile's python:3.11-slim-bookworm)
#   --debootstrap MIRROR   where the public base cannot be pulled: make a Debian bookworm base
#                          (Python 3.11) with debootstrap from this Debian mirror, import it as
#                          localhost/dsnet-base:bookworm (kept for the next build) and build on it
#   --ca-bundle FILE       CA bundle that pip inside the build trusts (podman only; default
#                          $PIP_CERT when set); mounted for the build, never copied into the image
#   --engine podman|docker force the builder
#
# REVISION and SOURCE_URL come from git when the source is a git checkout. Podman builds use
# chroot isolation (BUILDAH_ISOLATION overrides), which runs where a container runtime cannot.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)

tag=localhost/dsnet:dev variant=cuda torch_index="" wheels="" python_image="" mirror=""
ca_bundle="" engine=""
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
  case "$1" in -h|--help) usage 0 ;; esac
  [ $# -ge 2 ] || { echo "build.sh: $1 needs a value" >&2; usage; }
  case "$1" in
    --tag) tag=$2 ;;
    --variant) variant=$2 ;;
    --torch-index) torch_index=$2 ;;
    --wheels) wheels=$2 ;;
    --python-image) python_image=$2 ;;
    --debootstrap) mirror=$2 ;;
    --ca-bundle) ca_bundle=$2 ;;
    --engine) engine=$2 ;;
    *) echo "build.sh: unknown option $1" >&2; usage ;;
  esac
  shift 2
done

if [ -z "$engine" ]; then
  engine=$(command -v podman >/dev/null && echo podman || { command -v docker >/dev/null && echo docker; } || true)
fi
case "$engine" in
  podman|docker) command -v "$engine" >/dev/null || { echo "build.sh: $engine not found" >&2; exit 1; } ;;
  "") echo "build.sh: neither podman nor docker found" >&2; exit 1 ;;
  *) echo "build.sh: --engine must be podman or docker, not '$engine'" >&2; exit 2 ;;
esac
[ -n "$ca_bundle" ] || [ "$engine" != podman ] || ca_bundle=${PIP_CERT:-}
[ -z "$wheels" ] || [ -d "$wheels" ] || { echo "build.sh: --wheels $wheels: not a folder" >&2; exit 2; }
[ -z "$python_image" ] || [ -z "$mirror" ] \
  || { echo "build.sh: give --python-image or --debootstrap, not both" >&2; exit 2; }

if [ -n "$mirror" ]; then
  python_image=localhost/dsnet-base:bookworm
  if "$engine" image inspect "$python_image" >/dev/null 2>&1; then
    echo "build.sh: base $python_image exists; reusing it"
  else
    command -v debootstrap >/dev/null || { echo "build.sh: debootstrap not found" >&2; exit 1; }
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    echo "build.sh: debootstrap bookworm from $mirror"
    # python-is-python3: the Dockerfile calls `python`, as on the public python image.
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3 \
      bookworm "$rootfs" "$mirror" >/dev/null
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$engine" import - "$python_image" >/dev/null
    rm -rf "$rootfs"
  fi
fi

args=(build -f "$repo/infra/docker/Dockerfile" -t "$tag" --build-arg "TORCH_VARIANT=$variant")
[ -z "$torch_index" ] || args+=(--build-arg "TORCH_INDEX_URL=$torch_index")
[ -z "$python_image" ] || args+=(--build-arg "PYTHON_IMAGE=$python_image")
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  args+=(--build-arg "REVISION=$(git -C "$repo" rev-parse HEAD)")
  url=$(git -C "$repo" remote get-url origin 2>/dev/null || true)
  [ -z "$url" ] || args+=(--build-arg "SOURCE_URL=$url")
fi
# The Dockerfile's `wheels` stage is empty; a named build context of the same name replaces it.
[ -z "$wheels" ] || args+=(--build-context "wheels=$(cd "$wheels" && pwd)")
if [ "$engine" = podman ]; then
  args+=(--isolation "${BUILDAH_ISOLATION:-chroot}")
  if [ -n "$ca_bundle" ]; then
    # Mounted over the base's own bundle (both bases have one), so the mount leaves no file
    # behind in the image; pip reads it through the build stage's PIP_CERT.
    [ -f "$ca_bundle" ] || { echo "build.sh: --ca-bundle $ca_bundle: not a file" >&2; exit 2; }
    args+=(-v "$(realpath "$ca_bundle"):/etc/ssl/certs/ca-certificates.crt:ro"
           --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
  fi
elif [ -n "$ca_bundle" ]; then
  echo "build.sh: --ca-bundle is for podman; a docker build trusts what its daemon trusts" >&2
  exit 2
fi

echo "build.sh: $engine ${args[*]} $repo"
start=$(date +%s)
"$engine" "${args[@]}" "$repo"
echo "build.sh: built $tag in $(( $(date +%s) - start )) s"
