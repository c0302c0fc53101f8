#!/bin/bash -e
# The one initramfs generation of the image (stage0/02-firmware deferred every earlier one):
# put the real update-initramfs back and create the initramfs of every installed kernel. Its
# post-update hooks run too, e.g. Debian's raspi-firmware copying kernel, initramfs and device
# trees into /boot/firmware and writing config.txt and cmdline.txt.
#
# This runs on the export's copy of the stage, so the stage images keep the deferral and
# stages built later on them do not generate initramfs images either.

on_chroot <<'EOF'
real="$(dpkg-divert --truename /usr/sbin/update-initramfs)"
if [ "${real}" != /usr/sbin/update-initramfs ]; then
	rm -f /usr/sbin/update-initramfs
	dpkg-divert --local --rename --remove /usr/sbin/update-initramfs
fi
if [ -x /usr/sbin/update-initramfs ] && [ -n "$(linux-version list 2>/dev/null)" ]; then
	update-initramfs -c -k all
else
	echo "03-initramfs: no initramfs-tools or no kernel in /boot: nothing to generate"
fi
EOF
