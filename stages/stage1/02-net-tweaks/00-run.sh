#!/bin/bash -e
# Host name, hosts, classic interface names and DHCP on the wired interface.

echo "${TARGET_HOSTNAME}" >"${ROOTFS_DIR}/etc/hostname"
chmod 644 "${ROOTFS_DIR}/etc/hostname"
{
	printf '127.0.0.1\tlocalhost\n'
	printf '::1\t\tlocalhost ip6-localhost ip6-loopback\n'
	printf 'ff02::1\t\tip6-allnodes\n'
	printf 'ff02::2\t\tip6-allrouters\n'
	printf '\n127.0.1.1\t%s\n' "${TARGET_HOSTNAME}"
} >"${ROOTFS_DIR}/etc/hosts"
chmod 644 "${ROOTFS_DIR}/etc/hosts"

# eth0 / wlan0 instead of predictable names, so one configuration fits every board and PC.
mkdir -p "${ROOTFS_DIR}/etc/systemd/network"
ln -sfn /dev/null "${ROOTFS_DIR}/etc/systemd/network/99-default.link"

install -m 644 files/interfaces "${ROOTFS_DIR}/etc/network/interfaces"
install -m 644 -D files/eth0 "${ROOTFS_DIR}/etc/network/interfaces.d/eth0"
