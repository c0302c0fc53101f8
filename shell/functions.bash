# The bash functions every stage script gets (pi-gen's `scripts/common`), handed to each child
# bash as exported functions (`BASH_FUNC_<name>%%` environment entries, see src/exec/env.rs).
# Every function defined in this file is exported, helpers (`_pigen_*`) included.
#
# Semantics follow pi-gen (reference §3.11), with these fixes:
#   log          the message is printed as is (pi-gen used it as a `date` format: `%` expanded);
#   bootstrap    no mirror argument when MIRROR and DEB_SERVER are empty (debootstrap's default);
#                non-free-firmware from bookworm on; http(s)_proxy from APT_PROXY; setarch
#                linux32 only for armhf/i386; debootstrap's exit status counts, and a failure
#                shows the end of debootstrap.log instead of rmdir's "Directory not empty";
#   on_chroot    mount checks with `mountpoint -q` (no substring matching); a tmpfs on /run;
#                setarch linux32 only for armhf/i386; the locale variables are set for the
#                chroot command only, not exported into the calling script;
#   unmount,
#   unmount_image  exact mount points from /proc/self/mountinfo, deepest first; a busy mount
#                fails after a few tries instead of looping forever;
#   print_issue  no network access (the Kernel/Uname lines fetched by curl are gone); the
#                generator line carries PI_GEN_VERSION.
#
# Every function works in callers running with `set -e` and `set -u`, and returns non-zero
# (with a message on stderr) instead of exiting the caller's shell.

# log MESSAGE...: `[HH:MM:SS] MESSAGE` on stdout and appended to LOG_FILE (when set).
log() {
    local line
    printf -v line '[%(%T)T] %s' -1 "$*"
    printf '%s\n' "$line"
    # Under pigen build, a step's output already goes to the build log.
    if [ -n "${LOG_FILE:-}" ] && [ "${PIGEN_OUTPUT_LOGGED:-}" != 1 ]; then
        printf '%s\n' "$line" >>"$LOG_FILE" || return
    fi
}

# The 32-bit personality prefix for a TARGET_ARCH: `setarch linux32` for armhf and i386 (so
# `uname -m` says armv7l / i686 there), nothing for 64-bit targets.
_pigen_personality() {
    case "${TARGET_ARCH:-}" in
    armhf | i386) printf '%s\n' setarch linux32 ;;
    esac
}

# bootstrap SUITE TARGET [MIRROR [OPTION...]]: debootstrap the base system of TARGET_ARCH into
# TARGET; OPTIONs (e.g. --variant=minbase) go to debootstrap.
# MIRROR defaults to DEB_SERVER; when both are empty debootstrap uses its own default mirror.
bootstrap() {
    if [ $# -lt 2 ]; then
        echo "bootstrap: usage: bootstrap SUITE TARGET [MIRROR [DEBOOTSTRAP-OPTION...]]" >&2
        return 2
    fi
    local suite="$1" target="$2" mirror="${3:-${DEB_SERVER:-}}"
    local -a extra=("${@:4}")
    if [ -z "${TARGET_ARCH:-}" ]; then
        echo "bootstrap: TARGET_ARCH is not set" >&2
        return 1
    fi
    local components=main,contrib,non-free
    case "$suite" in
    buzz | rex | bo | hamm | slink | potato | woody | sarge | etch | lenny | squeeze | wheezy | \
        jessie | stretch | buster | bullseye) ;;
    *) components+=,non-free-firmware ;;
    esac
    local -a args=(--arch "$TARGET_ARCH" --include gnupg --components "$components" "${extra[@]}")
    if [ "${USE_RASPI_SOURCE:-}" = 1 ]; then
        args+=(--keyring "${STAGE_DIR:-.}/files/raspberrypi.gpg")
    fi
    args+=("$suite" "$target")
    if [ -n "$mirror" ]; then
        args+=("$mirror")
    fi
    local -a personality
    mapfile -t personality < <(_pigen_personality)
    local status=0
    (
        if [ -n "${APT_PROXY:-}" ]; then
            export http_proxy="$APT_PROXY" https_proxy="$APT_PROXY"
        fi
        exec "${personality[@]}" capsh --drop=cap_setfcap -- -c 'exec debootstrap "$@"' debootstrap "${args[@]}"
    ) || status=$?
    if [ "$status" -eq 0 ] && [ ! -d "$target/debootstrap" ]; then
        return 0
    fi
    # debootstrap removes TARGET/debootstrap when it succeeds; what is left holds its log.
    local dlog="$target/debootstrap/debootstrap.log" kept=""
    echo "bootstrap: debootstrap $suite $target failed (exit status $status)" >&2
    if [ -f "$dlog" ]; then
        kept="$dlog"
        if [ -n "${STAGE_WORK_DIR:-}" ] && cp "$dlog" "$STAGE_WORK_DIR/debootstrap.log"; then
            kept="$STAGE_WORK_DIR/debootstrap.log"
        fi
        echo "bootstrap: last lines of debootstrap.log:" >&2
        tail -n 25 "$dlog" | sed 's/^/    /' >&2
    else
        echo "bootstrap: debootstrap wrote no log; its error is printed above" >&2
    fi
    if [ -n "$kept" ]; then
        log "bootstrap failed: please check $kept"
    else
        log "bootstrap failed"
    fi
    return 1
}

# copy_previous: copy the previous stage's root filesystem into ROOTFS_DIR.
copy_previous() {
    if [ -z "${PREV_ROOTFS_DIR:-}" ] || [ ! -d "$PREV_ROOTFS_DIR" ]; then
        echo "Previous stage rootfs not found${PREV_ROOTFS_DIR:+: $PREV_ROOTFS_DIR}" >&2
        return 1
    fi
    if [ -z "${ROOTFS_DIR:-}" ]; then
        echo "copy_previous: ROOTFS_DIR is not set" >&2
        return 1
    fi
    mkdir -p "$ROOTFS_DIR" || return
    rsync -aHAXx --exclude var/cache/apt/archives "$PREV_ROOTFS_DIR/" "$ROOTFS_DIR/"
}

# _pigen_mount_at TARGET MOUNT-ARGS...: mount unless TARGET is already a mount point.
# TARGET must be a real directory (created when missing), never a symlink: a symlink in the
# root filesystem could point the mount at a host directory.
_pigen_mount_at() {
    local target="$1"
    shift
    if [ -L "$target" ]; then
        echo "on_chroot: $target is a symlink; refusing to mount over it" >&2
        return 1
    fi
    if mountpoint -q "$target"; then
        return 0
    fi
    if [ ! -d "$target" ]; then
        mkdir -p "$target" || return
    fi
    mount "$@" "$target"
}

# on_chroot [BASH-ARGS...]: run `bash -e BASH-ARGS...` inside ROOTFS_DIR (script on stdin when
# there are no arguments), with proc, dev, dev/pts, sys and a tmpfs on run mounted there and
# CAP_SETFCAP dropped from the bounding set.
on_chroot() {
    if [ -z "${ROOTFS_DIR:-}" ] || [ ! -d "$ROOTFS_DIR" ]; then
        echo "on_chroot: ROOTFS_DIR (${ROOTFS_DIR:-unset}) is not a directory" >&2
        return 1
    fi
    local root="${ROOTFS_DIR%/}"
    _pigen_mount_at "$root/proc" -t proc proc || return
    _pigen_mount_at "$root/dev" --bind /dev || return
    _pigen_mount_at "$root/dev/pts" --bind /dev/pts || return
    _pigen_mount_at "$root/sys" --bind /sys || return
    _pigen_mount_at "$root/run" -t tmpfs -o mode=755,nosuid,nodev tmpfs || return
    local -a personality
    mapfile -t personality < <(_pigen_personality)
    LC_ALL=en_US.UTF-8 LANG=en_US.UTF-8 LC_MEASUREMENT=en_US.UTF-8 \
        "${personality[@]}" capsh --drop=cap_setfcap "--chroot=$root/" -- -e "$@"
}

# _pigen_mounts_below DIR: every mount point at or below DIR (canonical path), deepest first,
# one a line; a path stacked several times is listed once per mount.
_pigen_mounts_below() {
    local dir="$1" mp
    local -a found=()
    while read -r _ _ _ _ mp _; do
        printf -v mp '%b' "$mp" # mountinfo escapes space, tab, newline, backslash as \ooo
        if [ "$mp" = "$dir" ] || [ "${mp#"$dir"/}" != "$mp" ]; then
            found+=("$mp")
        fi
    done </proc/self/mountinfo
    if [ ${#found[@]} -gt 0 ]; then
        printf '%s\n' "${found[@]}" | LC_ALL=C sort -r
    fi
}

# unmount [DIR]: unmount everything mounted at or below DIR (default: the current directory),
# deepest first. Fails when a mount stays busy.
unmount() {
    local dir
    dir="$(realpath -m -- "${1:-$PWD}")" || return
    if [ "$dir" = / ]; then
        echo "unmount: refusing to unmount everything below /" >&2
        return 1
    fi
    local -a mps
    local mp tries=0 before
    while :; do
        mapfile -t mps < <(_pigen_mounts_below "$dir")
        [ ${#mps[@]} -eq 0 ] && return 0
        before=${#mps[@]}
        for mp in "${mps[@]}"; do
            umount "$mp" 2>/dev/null || true
        done
        mapfile -t mps < <(_pigen_mounts_below "$dir")
        if [ ${#mps[@]} -ge "$before" ]; then
            tries=$((tries + 1))
            if [ "$tries" -ge 5 ]; then
                echo "unmount: cannot unmount (busy?): ${mps[*]}" >&2
                umount "${mps[0]}" # shows umount's own error
                return 1
            fi
            sleep 1
        fi
    done
}

# unmount_image IMG: unmount every file system of the loop devices attached to IMG (with
# whatever is mounted below them), then detach those loop devices.
unmount_image() {
    if [ $# -lt 1 ] || [ ! -e "$1" ]; then
        echo "unmount_image: no such image: ${1:-}" >&2
        return 1
    fi
    sync
    local -a loops mps fields
    local loop line src mp status=0
    mapfile -t loops < <(losetup --noheadings --output NAME --associated "$1")
    for loop in "${loops[@]}"; do
        [ -n "$loop" ] || continue
        mps=()
        # mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE …
        while IFS= read -r line; do
            read -r -a fields <<<"${line#* - }"
            src="${fields[1]:-}"
            if [ "$src" = "$loop" ] || [[ "$src" == "$loop"p[0-9]* ]]; then
                read -r _ _ _ _ mp _ <<<"$line"
                printf -v mp '%b' "$mp"
                mps+=("$mp")
            fi
        done </proc/self/mountinfo
        if [ ${#mps[@]} -gt 0 ]; then
            # Shortest first: unmounting a parent takes everything below it along.
            mapfile -t mps < <(printf '%s\n' "${mps[@]}" | LC_ALL=C sort -u)
            for mp in "${mps[@]}"; do
                if [ "$mp" = / ]; then
                    continue
                fi
                unmount "$mp" || status=1
            done
        fi
        losetup -d "$loop" || status=1
    done
    return "$status"
}

# print_issue STAGE_NAME: the text of /etc/rpi-issue (and of the .info file).
print_issue() {
    local stage_name="${1:-}"
    local root="${ROOTFS_DIR:-}"
    printf 'GNU/Linux %s UTC\n' "${IMG_DATE:-}"
    if [ -n "${CUSTOM_NAME:-}" ] && [ -n "${CUSTOM_VERSION:-}" ]; then
        printf '%s version %s\n' "$CUSTOM_NAME" "$CUSTOM_VERSION"
    fi
    printf 'Generated using %s%s, %s, %s, %s\n' "${PI_GEN:-}" "${PI_GEN_VERSION:+ $PI_GEN_VERSION}" \
        "${PI_GEN_REPO:-}" "${GIT_HASH:-}" "$stage_name"
    local changelog="$root/usr/share/doc/raspberrypi-kernel/changelog.Debian.gz"
    if [ -n "$root" ] && [ -f "$changelog" ]; then
        local firmware
        firmware="$(gzip -dc "$changelog" 2>/dev/null | sed -n '/firmware as of/{s/.* \([^ ]*\)$/\1/p;q}')" || true
        printf '\nFirmware: https://github.com/raspberrypi/firmware/tree/%s\n' "$firmware"
    fi
    printf '\nPackages:\n'
    if [ -n "$root" ]; then
        dpkg -l --root "$root"
    fi
}
