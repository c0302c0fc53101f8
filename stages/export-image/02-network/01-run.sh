#!/bin/bash -e
# The image starts without name servers: the build host's resolv.conf must not stay in it, and
# the DHCP client writes the network's own on the first boot.

rm -f "${ROOTFS_DIR}/etc/resolv.conf"
install -m 644 /dev/null "${ROOTFS_DIR}/etc/resolv.conf"
