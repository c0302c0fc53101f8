#!/bin/bash -e
# Time zone TIMEZONE_DEFAULT: /etc/localtime and /etc/timezone, then tzdata's own view of it.

ln -sfn "/usr/share/zoneinfo/${TIMEZONE_DEFAULT}" "${ROOTFS_DIR}/etc/localtime"
printf '%s\n' "${TIMEZONE_DEFAULT}" >"${ROOTFS_DIR}/etc/timezone"
chmod 644 "${ROOTFS_DIR}/etc/timezone"
on_chroot <<EOF
dpkg-reconfigure -f noninteractive tzdata
EOF
