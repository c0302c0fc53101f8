#!/bin/bash -e
# Bring the exported system up to date, then take the build's apt proxy and package lists out.
#
# The upgrade runs while the proxy (APT_PROXY, /etc/apt/apt.conf.d/51cache) is still in place,
# so builds that can only reach the archive through it work; the image must not keep it.
# A kernel update here gets its initramfs in 03-initramfs like every other kernel.

on_chroot <<EOF
apt-get -o Acquire::Retries=3 update
apt-get -o Acquire::Retries=3 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold dist-upgrade -y
apt-get clean
EOF

rm -f "${ROOTFS_DIR}/etc/apt/apt.conf.d/51cache"
find "${ROOTFS_DIR}/var/lib/apt/lists" -type f -delete
