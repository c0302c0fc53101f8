#!/bin/bash -e
# PC images: GRUB's files and configuration. pigen's export writes the boot code (MBR gap or
# BIOS boot partition, and EFI/BOOT on the ESP for GPT_BIOS_UEFI=1) from the GRUB in this tree.

if [ "${TARGET_RASPI}" = 1 ]; then
	exit 0
fi

if [ "${GPT_BIOS_UEFI}" = 1 ]; then
	list="gpt-packages-${UEFI_ARCH}"
	if [ ! -f "${list}" ]; then
		echo "01-run.sh: no ${list} for UEFI_ARCH=${UEFI_ARCH}" >&2
		exit 1
	fi
	packages="$(sed -e 's/#.*//' "${list}" | xargs)"
	log "Installing ${list} '${packages}'"
	on_chroot <<EOF
apt-get -o Acquire::Retries=3 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install --no-install-recommends -y ${packages}
apt-get clean
EOF
fi

install -m 644 files/grub "${ROOTFS_DIR}/etc/default/grub"
install -m 644 -D files/grub.cfg "${ROOTFS_DIR}/boot/grub/grub.cfg"
