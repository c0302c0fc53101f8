# shellcheck shell=bash
# Shared by the bench/ scripts (sourced).

# bench_default_tree CACHE: prints the path of a Debian bookworm amd64 tree made by debootstrap
# (minbase plus a kernel, systemd, python3, perl, ...: about 1 GB, like a lite OS image), made
# once into CACHE/tree. Needs root and debootstrap, and the network the first time.
bench_default_tree() {
    local cache="$1" tree="$1/tree"
    if [ ! -f "$tree/.complete" ]; then
        if [ "$(id -u)" != 0 ] || ! command -v debootstrap >/dev/null; then
            echo "bench: making the default tree needs root and debootstrap; pass a TREE" >&2
            exit 2
        fi
        rm -rf "$tree"
        echo "debootstrapping a bookworm tree into $tree (once)" >&2
        # In a private mount namespace: nothing debootstrap mounts can outlive it.
        unshare --mount --propagation private debootstrap --variant=minbase \
            --include=systemd,systemd-sysv,udev,dbus,locales,python3,perl,vim,less,man-db,openssh-server,curl,ca-certificates,iproute2,linux-image-amd64,firmware-linux-free \
            bookworm "$tree" >"$cache/debootstrap.log" 2>&1 ||
            { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
        touch "$tree/.complete"
    fi
    echo "$tree"
}

# bench_pigen HERE: prints the release pigen binary, building it when missing.
bench_pigen() {
    local here="$1" pigen="${CARGO_TARGET_DIR:-$1/target}/release/pigen"
    if [ ! -x "$pigen" ]; then
        (cd "$here" && cargo build --release --quiet)
    fi
    echo "$pigen"
}
