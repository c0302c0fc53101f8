#!/bin/bash -e
# apt for the build and the image: sources per release, the Raspberry Pi archive, the build's
# proxy, the no-recommends policy and REDUCED_FOOTPRINT's dpkg excludes; then update and
# dist-upgrade what debootstrap installed.

if [ -z "${DEB_SERVER}" ]; then
	echo "00-configure-apt: DEB_SERVER is empty and no mirror was found in the root's sources.list" >&2
	exit 1
fi

# Components and the security suite's name differ per release: non-free-firmware exists from
# bookworm on; the security suite is "RELEASE-security" from bullseye on, "buster/updates"
# before.
case "${RELEASE}" in
buster)
	components="main contrib non-free"
	security_suite="buster/updates"
	;;
bullseye)
	components="main contrib non-free"
	security_suite="bullseye-security"
	;;
*)
	components="main contrib non-free non-free-firmware"
	security_suite="${RELEASE}-security"
	;;
esac

# The security archive: DEB_SECURITY_SERVER, else the "debian-security" sibling of a
# DEB_SERVER ending in "/debian" (the layout of Debian's archive and its mirrors).
security_server="${DEB_SECURITY_SERVER}"
if [ -z "${security_server}" ]; then
	server="${DEB_SERVER%/}"
	if [ "${server%/debian}" != "${server}" ]; then
		security_server="${server%/debian}/debian-security"
	fi
fi

sources="${ROOTFS_DIR}/etc/apt/sources.list"
if [ "${USE_RASPI_SOURCE}" = 1 ]; then
	printf 'deb %s %s main contrib non-free rpi\n' "${RASPBIAN_SERVER}" "${RELEASE}" >"${sources}"
elif [ "${IS_TESTING}" = 1 ]; then
	# testing / unstable: one suite, no updates or security suites.
	printf 'deb %s %s %s\n' "${DEB_SERVER}" "${RELEASE}" "${components}" >"${sources}"
else
	{
		printf 'deb %s %s %s\n' "${DEB_SERVER}" "${RELEASE}" "${components}"
		if [ -n "${security_server}" ]; then
			printf 'deb %s %s %s\n' "${security_server}" "${security_suite}" "${components}"
		else
			log "00-configure-apt: no security suite in sources.list: DEB_SERVER (${DEB_SERVER}) does not end in /debian; set DEB_SECURITY_SERVER"
		fi
		printf 'deb %s %s-updates %s\n' "${DEB_SERVER}" "${RELEASE}" "${components}"
	} >"${sources}"
fi
chmod 644 "${sources}"

# The Raspberry Pi archive (firmware, kernels, raspi-config), signed by its own key.
raspi_list="${ROOTFS_DIR}/etc/apt/sources.list.d/raspi.list"
raspi_keyring=/usr/share/keyrings/raspberrypi-archive-keyring.gpg
if [ "${TARGET_RASPI}" = 1 ] && [ "${RASPI_FIRMWARE}" = raspberrypi ]; then
	install -m 644 -D "${STAGE_DIR}/files/raspberrypi-archive-keyring.gpg" "${ROOTFS_DIR}${raspi_keyring}"
	printf 'deb [signed-by=%s] %s %s main\n' "${raspi_keyring}" "${RASPI_SERVER}" "${RELEASE}" >"${raspi_list}"
	chmod 644 "${raspi_list}"
else
	rm -f "${raspi_list}"
fi

# The build's proxy; export-image/01-set-sources takes it out of the exported image.
if [ -n "${APT_PROXY}" ]; then
	printf 'Acquire::http { Proxy "%s"; };\n' "${APT_PROXY}" >"${ROOTFS_DIR}/etc/apt/apt.conf.d/51cache"
	chmod 644 "${ROOTFS_DIR}/etc/apt/apt.conf.d/51cache"
else
	rm -f "${ROOTFS_DIR}/etc/apt/apt.conf.d/51cache"
fi

# No binary package caches (rebuilt by apt when needed; they only take space in the image).
install -m 644 files/02nocache "${ROOTFS_DIR}/etc/apt/apt.conf.d/02nocache"

# Recommended and suggested packages stay out, in the build and on the device.
if [ "${INSTALL_RECOMMENDS}" != 1 ] || [ "${REDUCED_FOOTPRINT}" = 1 ]; then
	install -m 644 files/00default-selection "${ROOTFS_DIR}/etc/apt/apt.conf.d/00default-selection"
else
	rm -f "${ROOTFS_DIR}/etc/apt/apt.conf.d/00default-selection"
fi

# REDUCED_FOOTPRINT: dpkg leaves out documentation, manuals and most translations from here on
# (stage2 removes what debootstrap installed before this file existed).
if [ "${REDUCED_FOOTPRINT}" = 1 ]; then
	install -m 644 -D files/01_nodoc "${ROOTFS_DIR}/etc/dpkg/dpkg.cfg.d/01_nodoc"
else
	rm -f "${ROOTFS_DIR}/etc/dpkg/dpkg.cfg.d/01_nodoc"
fi

on_chroot <<EOF
apt-get -o Acquire::Retries=3 update
apt-get -o Acquire::Retries=3 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold dist-upgrade -y
apt-get clean
EOF
