#!/bin/bash -e
# Raspberry Pi boot configuration (PC images get theirs in stage2/04-bootloader).
#
# RASPI_FIRMWARE=raspberrypi: config.txt and cmdline.txt in the boot directory, which is
#   /boot/firmware from bookworm on and /boot before (where raspberrypi-bootloader installs).
# RASPI_FIRMWARE=debian: Debian's raspi-firmware writes config.txt and cmdline.txt itself each
#   time a kernel or initramfs is installed (export-image/03-initramfs runs it once); it reads
#   the root device and consoles from /etc/default/raspi-firmware.
#
# The root device is the placeholder ROOTDEV: pigen's export replaces it by the root
# partition's PARTUUID in cmdline.txt and /etc/default/raspi-firmware.

if [ "${TARGET_RASPI}" != 1 ]; then
	exit 0
fi

if [ "${RASPI_FIRMWARE}" = debian ]; then
	# Debian's kernel uses the upstream device trees: the serial port on the GPIO header is the
	# mini UART ttyS1 on the 64-bit boards (Pi 3, 4, Zero 2 W; their PL011 belongs to
	# Bluetooth) and the PL011 ttyAMA0 on the Pi 2. Naming it here, not "auto": the hook's
	# auto-detection would look at the build host's /dev.
	if [ "${TARGET_ARCH}" = arm64 ]; then
		serial=ttyS1
	else
		serial=ttyAMA0
	fi
	cat >>"${ROOTFS_DIR}/etc/default/raspi-firmware" <<EOF

# Set by pigen (stage1/00-boot-files): the root partition (filled in when the image is
# exported) and a console on the serial port and on the screen.
ROOTPART=ROOTDEV
CONSOLES="${serial},115200 tty1"
EOF
	exit 0
fi

case "${RELEASE}" in
buster | bullseye) boot_dir=/boot ;;
*) boot_dir=/boot/firmware ;;
esac
mkdir -p "${ROOTFS_DIR}${boot_dir}"

{
	cat files/config.txt
	if [ "${TARGET_ARCH}" = arm64 ]; then
		printf '\n# Start the CPU in 64-bit mode and boot the 64-bit kernel.\narm_64bit=1\n'
	fi
	case "${RELEASE}" in
	buster | bullseye) ;;
	*) printf '\n# Load the initramfs that belongs to the kernel the firmware picked.\nauto_initramfs=1\n' ;;
	esac
} >"${ROOTFS_DIR}${boot_dir}/config.txt"
chmod 644 "${ROOTFS_DIR}${boot_dir}/config.txt"
install -m 644 files/cmdline.txt "${ROOTFS_DIR}${boot_dir}/cmdline.txt"
