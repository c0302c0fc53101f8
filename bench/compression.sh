#!/bin/bash
# Compression throughput (MB/s) and ratio of every DEPLOY_COMPRESSION on one realistic disk
# image, measured in one run with the code the deploy uses (`pigen internal bench-compression`).
#
#   bench/compression.sh [options] [IMAGE | TREE]
#
#   IMAGE   a raw disk image file: measured as it is
#   TREE    a directory (a root file system): packed into an ext4 image with `mkfs.ext4 -d`,
#           sized to its content + 25 %, as the export sizes root partitions
#   (none)  a Debian bookworm tree made by debootstrap (minbase plus a kernel, systemd, python3,
#           perl, ...: about 900 MB, like a lite OS image), cached in $PIGEN_BENCH_CACHE
#           (default /var/tmp/pigen-bench); needs root and debootstrap, and network once
#
# Options:
#   --level N          COMPRESSION_LEVEL (default 6; clamped to each format's range)
#   --formats LIST     comma-separated, default zip,gz,xz,zstd
#   --compare-tools    also time the zip, gzip, xz -T0 and zstd -T0 programs at the same level
#   --pigen PATH       the pigen binary (default: target/release/pigen, built if missing)
#
# Prints the table to stdout; progress (on a terminal) to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
level=6
formats=zip,gz,xz,zstd
compare=0
pigen=""
source_path=""
while [ $# -gt 0 ]; do
    case "$1" in
    --level) level="$2"; shift 2 ;;
    --formats) formats="$2"; shift 2 ;;
    --compare-tools) compare=1; shift ;;
    --pigen) pigen="$2"; shift 2 ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "compression.sh: unknown option $1" >&2; exit 2 ;;
    *) source_path="$1"; shift ;;
    esac
done

cache="${PIGEN_BENCH_CACHE:-/var/tmp/pigen-bench}"
mkdir -p "$cache"
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=bench/lib.sh
. "$here/bench/lib.sh"
[ -n "$pigen" ] || pigen="$(bench_pigen "$here")"

pack_tree() { # TREE IMAGE
    local tree="$1" image="$2" kib
    if awk -v t="$(realpath "$tree")/" 'index($2, t) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        echo "compression.sh: something is mounted below $tree; unmount it first" >&2
        exit 1
    fi
    kib=$(du -sk --apparent-size "$tree" | cut -f1)
    kib=$((kib * 5 / 4 + 65536))
    rm -f "$image"
    echo "packing $tree into $image (${kib} KiB ext4)" >&2
    mkfs.ext4 -q -F -L ROOTFS -b 4096 -d "$tree" "$image" "${kib}k" >&2
}

if [ -z "$source_path" ]; then
    tree="$(bench_default_tree "$cache")"
    image="$cache/tree.img"
    if [ ! -f "$image" ] || [ "$tree/.complete" -nt "$image" ]; then
        pack_tree "$tree" "$image"
    fi
elif [ -d "$source_path" ]; then
    image="$cache/$(basename "$source_path").img"
    pack_tree "$source_path" "$image"
else
    image="$source_path"
fi

# Other work on the machine slows every row alike; the load average says how much there was.
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$pigen" internal bench-compression --level "$level" --formats "$formats" "$image"

if [ "$compare" = 1 ]; then
    bytes=$(stat -c %s "$image")
    echo
    echo "the same image through the programs (output to a file in $cache):"
    printf '%-22s %9s %9s %11s\n' program seconds MB/s "output MB"
    out="$cache/.tool-output"
    for tool in zip gzip xz zstd; do
        case "$tool" in
        zip) command -v zip >/dev/null || continue
            cmd=(zip -q -"$level" -j "$out.zip" "$image"); file="$out.zip" ;;
        gzip) cmd=(sh -c "gzip -$level -c '$image' >'$out'"); file="$out" ;;
        xz) cmd=(sh -c "xz -T0 -$level -c '$image' >'$out'"); file="$out" ;;
        zstd) lvl=$level; [ "$lvl" -lt 1 ] && lvl=1
            cmd=(sh -c "zstd -q -T0 -$lvl -c '$image' >'$out'"); file="$out" ;;
        esac
        command -v "$tool" >/dev/null || continue
        rm -f "$out" "$out.zip"
        start=$(date +%s.%N)
        "${cmd[@]}"
        end=$(date +%s.%N)
        awk -v t="$tool" -v s="$start" -v e="$end" -v b="$bytes" -v o="$(stat -c %s "$file")" \
            'BEGIN { d = e - s; printf "%-22s %9.2f %9.1f %11.1f\n", t, d, b / d / 1e6, o / 1e6 }'
        rm -f "$out" "$out.zip"
    done
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
