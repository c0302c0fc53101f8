#!/bin/bash
# Disk image assembly, pigen against the original pi-gen method, on the same tree, in one run.
#
#   pigen:    `pigen internal bench-export` — the export's own code: measure the tree, write the
#             MBR, `mkfs.ext4 -d TREE` at the root partition's offset, FAT boot partition with
#             mkfs.fat + mcopy, then pigen's self-checks (sfdisk read-back, e2fsck -n, fsck.fat -n).
#             Nothing is mounted.
#   original: what pi-gen's export-image does: size with du (+20 % + 200 MiB), parted, a loop
#             device with partitions, mkfs.fat + mkfs.ext4, mount the root, rsync -aHAXx the tree
#             in, unmount, zerofree, detach.
#
# Both write a Raspberry Pi layout (FAT boot partition from the tree's /boot/firmware, ext4 root)
# into a new image file and end with a sync of it. This kernel has no vfat driver, so the
# original's boot partition is filled with mcopy, like pigen's, instead of mount + rsync (a few
# megabytes either way). Printed: each run, the best of each method and their ratio (pigen's
# target: at most 0.5), pigen's time per part, and then compression throughput of pigen's image
# for every DEPLOY_COMPRESSION (`pigen internal bench-compression`).
#
#   bench/export.sh [--runs N] [--cold] [--level N] [--no-compression] [--pigen PATH] [TREE]
#
#   TREE    a root file system directory (copied first; its /boot/firmware, if any, becomes the
#           boot partition, else the kernel and initramfs from /boot with a config.txt)
#   (none)  the Debian bookworm tree of bench/lib.sh (about 1 GB), made once into
#           $PIGEN_BENCH_CACHE (default /var/tmp/pigen-bench)
#   --runs N          runs of each method, alternating which goes first (default 2)
#   --cold            drop the page cache before each run (the tree is read from disk); by
#                     default the tree is in the cache, as it is right after a build
#   --level N         COMPRESSION_LEVEL for the compression table (default 6)
#   --no-compression  skip the compression table
#
# Needs root, loop devices, and parted, rsync, zerofree, mtools,
# dosfstools (apt-get install parted rsync zerofree mtools dosfstools). Everything mounted is in
# a private mount namespace and gone when the script ends.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
args=("$@")
runs=2
cold=0
level=6
compression=1
pigen=""
source_tree=""
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --cold) cold=1; shift ;;
    --level) level="$2"; shift 2 ;;
    --no-compression) compression=0; shift ;;
    --pigen) pigen="$2"; shift 2 ;;
    -h | --help) sed -n '2,32p' "$0"; exit 0 ;;
    -*) echo "export.sh: unknown option $1" >&2; exit 2 ;;
    *) source_tree="$1"; shift ;;
    esac
done

export PATH="$PATH:/usr/sbin:/sbin"
if [ "$(id -u)" != 0 ]; then
    echo "export.sh: needs root (loop devices, mounts)" >&2
    exit 2
fi
missing=""
for tool in parted rsync zerofree mcopy mkfs.fat losetup; do
    command -v "$tool" >/dev/null || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    echo "export.sh: missing:$missing (apt-get install parted rsync zerofree mtools dosfstools)" >&2
    exit 2
fi
# Mounts and loop devices of this script cannot outlive it.
if [ -z "${PIGEN_BENCH_PRIVATE_NS:-}" ]; then
    PIGEN_BENCH_PRIVATE_NS=1 exec unshare --mount --propagation private "$0" "${args[@]}"
fi

cache="${PIGEN_BENCH_CACHE:-/var/tmp/pigen-bench}"
mkdir -p "$cache"
# shellcheck source=bench/lib.sh
. "$here/bench/lib.sh"
[ -n "$pigen" ] || pigen="$(bench_pigen "$here")"
[ -n "$source_tree" ] || source_tree="$(bench_default_tree "$cache")"

work="$(mktemp -d "$cache/export-bench.XXXXXX")"
loop=""
cleanup() {
    mountpoint -q "$work/mnt" 2>/dev/null && umount -l "$work/mnt"
    [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

tree="$work/tree"
echo "copying $source_tree to $tree" >&2
cp -a "$source_tree" "$tree"
rm -f "$tree/.complete"
if [ ! -d "$tree/boot/firmware" ]; then
    # A boot partition's worth of files, as a Raspberry Pi tree has.
    mkdir -p "$tree/boot/firmware"
    find "$tree/boot" -maxdepth 1 -type f \( -name 'vmlinuz-*' -o -name 'initrd.img-*' \) \
        -exec cp {} "$tree/boot/firmware/" \;
    printf 'arm_64bit=1\nenable_uart=1\n' >"$tree/boot/firmware/config.txt"
    printf 'console=serial0,115200 root=ROOTDEV rootfstype=ext4 rootwait\n' \
        >"$tree/boot/firmware/cmdline.txt"
fi
mkdir -p "$work/mnt"

seconds_since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }'; }

# The original method, after pi-gen's export-image (prerun.sh and the finalise step).
original() { # IMAGE
    local img="$1" align=$((4 * 1024 * 1024)) boot_size=$((512 * 1024 * 1024))
    local root_size root_margin boot_start boot_part root_start root_part img_size
    root_size=$(du -x --apparent-size -s "$tree" --exclude var/cache/apt/archives \
        --exclude boot/firmware --block-size=1 | cut -f 1)
    root_margin=$((root_size / 5 + 200 * 1024 * 1024))
    boot_start=$align
    boot_part=$(((boot_size + align - 1) / align * align))
    root_start=$((boot_start + boot_part))
    root_part=$(((root_size + root_margin + align - 1) / align * align))
    img_size=$((root_start + root_part))
    rm -f "$img"
    truncate -s "$img_size" "$img"
    # parted calls udevadm, which is not there without udev.
    parted --script "$img" mklabel msdos 2>/dev/null
    parted --script "$img" unit B mkpart primary fat32 "$boot_start" "$((boot_start + boot_part - 1))" 2>/dev/null
    parted --script "$img" unit B mkpart primary ext4 "$root_start" "$((root_start + root_part - 1))" 2>/dev/null
    # pi-gen attaches the image with --partscan and uses loopNp1/p2; partition nodes need udev
    # or a devtmpfs that makes them, so here each partition gets its own loop device at its
    # offset: the same block I/O.
    boot_loop="$(losetup --show --find --offset "$boot_start" --sizelimit "$boot_part" "$img")"
    loop="$(losetup --show --find --offset "$root_start" --sizelimit "$root_part" "$img")"
    mkfs.fat -n bootfs -F 32 -s 4 "$boot_loop" >>"$work/original.log" 2>&1
    mkfs.ext4 -q -L rootfs -O ^huge_file,^64bit "$loop"
    mount -t ext4 "$loop" "$work/mnt"
    mkdir -p "$work/mnt/boot/firmware"
    rsync -aHAXx --exclude /var/cache/apt/archives --exclude /boot/firmware "$tree/" "$work/mnt/"
    # pi-gen: mount the FAT partition on boot/firmware and rsync -rtx into it. (mtools says
    # "Could not get geometry" of a loop device.)
    mcopy -s -i "$boot_loop" "$tree/boot/firmware/"* ::/ 2>>"$work/original.log"
    losetup -d "$boot_loop"
    sync
    umount "$work/mnt"
    zerofree "$loop"
    losetup -d "$loop"
    loop=""
    sync -f "$img"
}

with_pigen() { # IMAGE
    rm -f "$1"
    "$pigen" internal bench-export "$tree" "$1" >"$work/pigen.out"
    sync -f "$1"
}

echo "tree: $(du -sh --apparent-size "$tree" | cut -f1) in $(find "$tree" | wc -l) files" \
    "($source_tree), page cache $([ "$cold" = 1 ] && echo dropped before each run || echo warm);" \
    "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-4s %-9s %10s %12s\n' run method seconds "image MiB"
best_original="" best_pigen=""
for run in $(seq "$runs"); do
    if [ $((run % 2)) = 1 ]; then order="original pigen"; else order="pigen original"; fi
    for method in $order; do
        img="$work/$method.img"
        sync
        [ "$cold" = 1 ] && echo 3 >/proc/sys/vm/drop_caches
        start=$(date +%s.%N)
        case "$method" in
        original) original "$img" || { cat "$work/original.log" >&2; exit 1; } ;;
        pigen) with_pigen "$img" ;;
        esac
        took=$(seconds_since "$start")
        printf '%-4s %-9s %10s %12s\n' "$run" "$method" "$took" "$(($(stat -c %s "$img") >> 20))"
        if [ "$method" = original ]; then
            best_original=$(awk -v a="$took" -v b="$best_original" 'BEGIN { print (b == "" || a < b) ? a : b }')
        else
            best_pigen=$(awk -v a="$took" -v b="$best_pigen" 'BEGIN { print (b == "" || a < b) ? a : b }')
        fi
        [ "$method" = original ] && [ "$run" -lt "$runs" ] && rm -f "$img"
    done
done
echo
echo "pigen's parts (last run):"
grep '^part ' "$work/pigen.out" | sed 's/^part /  /'
echo
awk -v p="$best_pigen" -v o="$best_original" 'BEGIN {
    r = p / o
    printf "best: pigen %.2f s, original %.2f s\n", p, o
    printf "ratio pigen/original: %.2f (target <= 0.50: %s)\n", r, (r <= 0.5 ? "met" : "NOT met")
}'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$compression" = 1 ]; then
    echo
    echo "compression of pigen's image (level $level):"
    "$pigen" internal bench-compression --level "$level" --out-dir "$work" "$work/pigen.img"
fi
