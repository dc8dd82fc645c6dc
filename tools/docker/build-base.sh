#!/usr/bin/env bash
# Bootstrap a local Debian base image (python3 + venv + CA certificates) with debootstrap + `docker import`,
# for machines that reach a Debian mirror but no image registry. Idempotent: an existing image is kept.
#   tools/docker/build-base.sh [IMAGE]        # default loraworks/debian-base; FORCE=1 rebuilds
# Then: docker build -f tools/docker/Dockerfile --build-arg BASE=loraworks/debian-base -t loraworks .
set -euo pipefail
IMAGE="${1:-loraworks/debian-base}"
SUITE="${SUITE:-bookworm}"                       # Debian 12: python3 = 3.11, inside uv.lock's >=3.11,<3.14
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

# Two images, each built only when missing: $IMAGE:bootstrap (debootstrap, minutes) and $IMAGE = it plus this
# host's local CAs (/usr/local/share/ca-certificates: a TLS-inspecting proxy or company CA), so that pip and
# uv in the Dockerfile reach PyPI the way this host does.
if [[ -n "${FORCE:-}" ]]; then docker image rm -f "$IMAGE" "$IMAGE:bootstrap" >/dev/null 2>&1 || true; fi
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE exists (FORCE=1 rebuilds)"
  exit 0
fi
tmp="$(mktemp -d /tmp/loraworks-base.XXXXXX)"
trap 'rm -rf --one-file-system "$tmp"' EXIT

if ! docker image inspect "$IMAGE:bootstrap" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { echo "debootstrap missing: apt-get install -y debootstrap" >&2; exit 2; }
  [[ $EUID -eq 0 ]] || { echo "debootstrap needs root (it chroots and creates device nodes)" >&2; exit 2; }
  root="$tmp/rootfs"
  # minbase + the three packages the Dockerfile needs; everything else comes from PyPI via uv
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$root" "$MIRROR"
  # apt caches and lists only bloat the image; the Dockerfile's own apt step (CUDA bases) runs `apt-get update`
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$IMAGE:bootstrap"
  rm -rf --one-file-system "$root"
fi

mkdir -p "$tmp/ca"
cp /usr/local/share/ca-certificates/*.crt "$tmp/ca/" 2>/dev/null || true
cat >"$tmp/Dockerfile" <<DOCKERFILE
FROM $IMAGE:bootstrap
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
# pip (certifi), requests and uv (webpki roots) read these instead of their own bundles
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
DOCKERFILE
docker build -q -t "$IMAGE" "$tmp"
echo "built $IMAGE"
