#!/bin/bash -e
# Programs in the chroot must run during the export: a preload library (e.g. Raspberry Pi's
# memory routines) can fail under qemu-user, so it is set aside until 04-finalise puts it back.
# No emulator is copied in: pigen runs foreign binaries through binfmt_misc with the F flag.

if [ -e "${ROOTFS_DIR}/etc/ld.so.preload" ]; then
	mv "${ROOTFS_DIR}/etc/ld.so.preload" "${ROOTFS_DIR}/etc/ld.so.preload.disabled"
fi
