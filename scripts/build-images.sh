#!/usr/bin/env bash
# Builds wid's container images on this machine, from scratch (no base image, no registry):
#
#   localhost/wid:VERSION           the stripped release binary, the shared libraries it links,
#                                   CA certificates, a non-root user (65532), no shell
#   localhost/wid-iptables:VERSION  Debian's iptables (nft and legacy backends), for the agent's
#                                   DaemonSet to install the metadata redirection on each node
#
# VERSION is the workspace's version (Cargo.toml). Each image is left in podman's local storage
# (buildah and podman share it) and written as an OCI archive to target/images/NAME-VERSION.tar.
#
# The redirection is an iptables image rather than netlink calls from the agent: the rule must
# share the host's iptables backend and lock with kube-proxy and the CNI (a DNAT through nft
# beside a legacy kube-proxy, or the reverse, is the failure peers report), and Debian's iptables
# already speaks both; the agent stays free of NET_ADMIN.
#
#   scripts/build-images.sh       (root, or a user buildah works for; installs buildah if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
source_url="$(git config --get remote.origin.url 2>/dev/null || echo unknown)"
out=target/images

if ! command -v buildah >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null
    else
        echo "buildah is missing: apt-get install buildah" >&2
        exit 1
    fi
fi

echo "==> release binary (wid $version, commit $commit)"
WID_SOURCE_COMMIT="$commit" cargo build --release --locked -p wid

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# Copies each program and the shared libraries it links (and their loader) into the root $1.
with_libraries() {
    local root="$1"
    shift
    local program lib
    for program in "$@"; do
        for lib in $(ldd "$program" | grep -o '/[^ ]*'); do
            cp --parents -L -n "$lib" "$root/"
        done
    done
}

# The files every image has: CA certificates, the users, /tmp.
base_root() {
    local root="$1"
    mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/wid"
    chmod 1777 "$root/tmp"
    cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nwid:x:65532:65532:wid:/home/wid:/sbin/nologin\n' >"$root/etc/passwd"
    printf 'root:x:0:\nwid:x:65532:\n' >"$root/etc/group"
}

# Commits the working container $1 as localhost/$2:VERSION and writes its OCI archive.
commit_image() {
    local container="$1" name="$2"
    buildah config \
        --label org.opencontainers.image.title="$name" \
        --label org.opencontainers.image.version="$version" \
        --label org.opencontainers.image.revision="$commit" \
        --label org.opencontainers.image.source="$source_url" \
        --label org.opencontainers.image.licenses="Apache-2.0" \
        "$container"
    # A rebuild replaces the image rather than leaving the old one untagged.
    buildah rmi "localhost/$name:$version" >/dev/null 2>&1 || true
    buildah commit --quiet --format oci --rm "$container" "localhost/$name:$version" >/dev/null
    rm -f "$out/$name-$version.tar"
    buildah push --quiet "localhost/$name:$version" "oci-archive:$out/$name-$version.tar:localhost/$name:$version"
    echo "    localhost/$name:$version  $(du -h "$out/$name-$version.tar" | cut -f1) ($out/$name-$version.tar)"
}

echo "==> localhost/wid:$version"
root="$work/wid"
mkdir -p "$root/usr/local/bin"
base_root "$root"
strip --strip-all -o "$root/usr/local/bin/wid" target/release/wid
with_libraries "$root" target/release/wid
container="$(buildah from scratch)"
buildah add --quiet "$container" "$root" / >/dev/null
# The user's home, its own (buildah add makes what it copies root's unless told).
buildah add --quiet --chown 65532:65532 --chmod 0700 "$container" "$root/home" /home >/dev/null
buildah config \
    --user 65532:65532 \
    --env HOME=/home/wid \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --workingdir /home/wid \
    --entrypoint '["/usr/local/bin/wid"]' \
    --cmd '["--help"]' \
    "$container"
commit_image "$container" wid

echo "==> localhost/wid-iptables:$version"
root="$work/iptables"
mkdir -p "$root/usr/sbin" "$root/bin" "$root/etc" "$root/usr/lib/x86_64-linux-gnu"
base_root "$root"
for program in xtables-nft-multi xtables-legacy-multi; do
    cp -L "/usr/sbin/$program" "$root/usr/sbin/"
done
# Debian's names: iptables-nft, iptables-legacy-save, ip6tables-nft-restore, ...; the plain
# names are the nft backend's, as on Debian; the DaemonSet's script picks the host's.
for family in iptables ip6tables; do
    for suffix in "" -save -restore; do
        ln -s xtables-nft-multi "$root/usr/sbin/$family-nft$suffix"
        ln -s xtables-legacy-multi "$root/usr/sbin/$family-legacy$suffix"
        ln -s "$family-nft$suffix" "$root/usr/sbin/$family$suffix"
    done
done
# The matches and targets iptables loads at run time, and what its rules name.
cp -r /usr/lib/x86_64-linux-gnu/xtables "$root/usr/lib/x86_64-linux-gnu/"
cp /etc/protocols /etc/services "$root/etc/"
# A shell and sleep for the DaemonSet's loop that keeps the rule in place.
cp -L /bin/dash "$root/bin/sh"
cp -L /bin/sleep /usr/bin/grep "$root/bin/"
with_libraries "$root" "$root/usr/sbin/xtables-nft-multi" "$root/usr/sbin/xtables-legacy-multi" \
    "$root/bin/sh" "$root/bin/sleep" "$root/bin/grep" "$root"/usr/lib/x86_64-linux-gnu/xtables/*.so
container="$(buildah from scratch)"
buildah add --quiet "$container" "$root" / >/dev/null
buildah config --env PATH=/usr/sbin:/bin --entrypoint '["/usr/sbin/iptables"]' --cmd '["--version"]' "$container"
commit_image "$container" wid-iptables
