#!/bin/bash -e
# Before any kernel is installed:
#
# * /etc/kernel-img.conf: PC images boot /vmlinuz and /initrd.img through the GRUB config that
#   stage2 writes, so the kernel packages must keep those symlinks; Raspberry Pi images boot
#   from the firmware directory and need none.
# * initramfs generation is deferred to the export (export-image/03-initramfs): every kernel
#   install and every package with an initramfs hook would otherwise run mkinitramfs again,
#   which takes about 15 minutes under qemu-user. update-initramfs is diverted to a stub that
#   only says so; deleting an initramfs (-d, on kernel removal) still works.

if [ "${TARGET_RASPI}" = 1 ]; then
	symlinks=no
else
	symlinks=yes
fi
cat >"${ROOTFS_DIR}/etc/kernel-img.conf" <<EOF
# Written by pigen (stage0/02-firmware).
do_symlinks = ${symlinks}
link_in_boot = no
EOF
chmod 644 "${ROOTFS_DIR}/etc/kernel-img.conf"

on_chroot <<'EOF'
if [ "$(dpkg-divert --truename /usr/sbin/update-initramfs)" = /usr/sbin/update-initramfs ]; then
	dpkg-divert --local --rename --divert /usr/sbin/update-initramfs.pigen-deferred --add /usr/sbin/update-initramfs
fi
EOF
install -m 755 files/update-initramfs "${ROOTFS_DIR}/usr/sbin/update-initramfs"
