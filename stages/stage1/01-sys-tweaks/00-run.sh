#!/bin/bash -e
# fstab, the first user and a locked root account.
#
# fstab names devices by placeholders that pigen's export fills in with the PARTUUIDs of the
# image's partitions: the root partition, the Raspberry Pi's boot partition (mounted on the
# boot directory stage1/00-boot-files uses) and, for GPT_BIOS_UEFI=1, the EFI system partition.

boot_line=""
if [ "${TARGET_RASPI}" = 1 ]; then
	boot_dir=/boot/firmware
	if [ "${RASPI_FIRMWARE}" = raspberrypi ]; then
		case "${RELEASE}" in
		buster | bullseye) boot_dir=/boot ;;
		esac
	fi
	mkdir -p "${ROOTFS_DIR}${boot_dir}"
	boot_line="BOOTDEV  ${boot_dir}  vfat  defaults  0  2"
fi
efi_line=""
if [ "${GPT_BIOS_UEFI}" = 1 ]; then
	mkdir -p "${ROOTFS_DIR}/boot/efi"
	efi_line="EFIDEV  /boot/efi  vfat  umask=0077  0  1"
fi
{
	echo "# Written by pigen (stage1/01-sys-tweaks); the first column was filled in at export."
	echo "proc  /proc  proc  defaults  0  0"
	echo "ROOTDEV  /  ext4  defaults,noatime  0  1"
	if [ -n "${boot_line}" ]; then
		echo "${boot_line}"
	fi
	if [ -n "${efi_line}" ]; then
		echo "${efi_line}"
	fi
} >"${ROOTFS_DIR}/etc/fstab"
chmod 644 "${ROOTFS_DIR}/etc/fstab"

# Keep the boot messages on tty1 instead of clearing them for the login prompt.
install -m 644 -D files/noclear.conf "${ROOTFS_DIR}/etc/systemd/system/getty@tty1.service.d/noclear.conf"

# The password goes to chpasswd through the environment and a pipe: it never appears in a
# script, a command line or the build log, and only its hash is stored.
on_chroot <<'EOF'
if ! id -u "${FIRST_USER_NAME}" >/dev/null 2>&1; then
	useradd --create-home --user-group --shell /bin/bash "${FIRST_USER_NAME}"
fi
printf '%s:%s\n' "${FIRST_USER_NAME}" "${FIRST_USER_PASS}" | chpasswd
usermod --password '*' root
EOF
