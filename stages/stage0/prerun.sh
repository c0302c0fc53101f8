#!/bin/bash -e
# stage0: debootstrap the base system of TARGET_ARCH / RELEASE into ROOTFS_DIR.
#
# Mirror: DEB_SERVER, or debootstrap's own default mirror when DEB_SERVER is unset (pigen then
# hands later steps the mirror debootstrap wrote into the root's sources.list as DEB_SERVER).
# With USE_RASPI_SOURCE=1 (PREFER_RASPI_SOURCE=1, TARGET_RASPI=1, armhf) the base comes from the
# Raspbian archive named by RASPBIAN_SERVER, checked with files/raspberrypi.gpg.

fail() {
	echo "stage0: $*" >&2
	exit 1
}

if [ "${TARGET_RASPI}" != 1 ]; then
	case "${TARGET_ARCH}" in
	amd64 | i386) ;;
	*) fail "TARGET_RASPI=0 builds PC images with GRUB, which pigen's stock stages support for amd64 and i386 only (TARGET_ARCH=${TARGET_ARCH}); set TARGET_RASPI=1 for a Raspberry Pi image" ;;
	esac
	# Debian stopped building i386 kernels with trixie (i386 is left for 32-bit programs on
	# amd64 systems), so such an image could not boot.
	if [ "${TARGET_ARCH}" = i386 ]; then
		case "${RELEASE}" in
		buster | bullseye | bookworm) ;;
		*) fail "Debian ${RELEASE} has no i386 kernel, so a 32-bit PC image cannot boot; use RELEASE=bookworm, or TARGET_ARCH=amd64" ;;
		esac
	fi
fi

# The Raspberry Pi archive is an extra apt source (stage0/00-configure-apt); its URL and key
# are not shipped with pigen, so say what is missing before anything is downloaded.
if [ "${TARGET_RASPI}" = 1 ] && [ "${RASPI_FIRMWARE}" = raspberrypi ]; then
	if [ -z "${RASPI_SERVER}" ]; then
		fail "RASPI_FIRMWARE=raspberrypi needs RASPI_SERVER, the URL of the Raspberry Pi archive (the apt repository with the Raspberry Pi firmware and kernels, as given in Raspberry Pi's documentation); or build with RASPI_FIRMWARE=debian"
	fi
	if [ ! -s "${STAGE_DIR}/files/raspberrypi-archive-keyring.gpg" ]; then
		fail "RASPI_FIRMWARE=raspberrypi needs the Raspberry Pi archive's signing key as a binary OpenPGP keyring in ${STAGE_DIR}/files/raspberrypi-archive-keyring.gpg (see ${STAGE_DIR}/files/README)"
	fi
fi

if [ "${USE_RASPI_SOURCE}" = 1 ]; then
	if [ -z "${RASPBIAN_SERVER}" ]; then
		fail "PREFER_RASPI_SOURCE=1 needs RASPBIAN_SERVER, the URL of the Raspbian archive"
	fi
	if [ ! -s "${STAGE_DIR}/files/raspberrypi.gpg" ]; then
		fail "PREFER_RASPI_SOURCE=1 needs the Raspbian archive's signing key as a binary OpenPGP keyring in ${STAGE_DIR}/files/raspberrypi.gpg (see ${STAGE_DIR}/files/README)"
	fi
	bootstrap "${RELEASE}" "${ROOTFS_DIR}" "${RASPBIAN_SERVER}"
else
	# Empty DEB_SERVER: no mirror argument, debootstrap's default.
	bootstrap "${RELEASE}" "${ROOTFS_DIR}"
fi
