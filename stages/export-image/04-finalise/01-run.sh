#!/bin/bash -e
# Last clean-up before pigen assembles the disk image from this tree: nothing of the build
# host or of this particular build may stay in the image.

root="${ROOTFS_DIR}"

on_chroot <<'EOF'
# The clock a Raspberry Pi without RTC starts with: the time of this build.
if command -v fake-hwclock >/dev/null; then
	fake-hwclock save force
fi
apt-get clean
EOF

if [ -d "${root}/home/${FIRST_USER_NAME}/.config" ]; then
	chmod 700 "${root}/home/${FIRST_USER_NAME}/.config"
fi

# The preload library set aside by 00-allow-rerun (kept aside for QEMU images, as pi-gen does).
if [ "${USE_QEMU}" != 1 ] && [ -e "${root}/etc/ld.so.preload.disabled" ]; then
	mv "${root}/etc/ld.so.preload.disabled" "${root}/etc/ld.so.preload"
fi

# An emulator copied in by other tools (pigen copies none); one installed as a package stays.
for emulator in "${root}"/usr/bin/qemu-*-static; do
	[ -e "${emulator}" ] || continue
	if ! grep -qxF "${emulator#"${root}"}" "${root}"/var/lib/dpkg/info/*.list 2>/dev/null; then
		rm -f "${emulator}"
	fi
done

# Build leftovers: proxy, backups of edited files, debconf and dpkg "-old" files.
rm -f "${root}/etc/apt/apt.conf.d/51cache"
rm -f "${root}/etc/network/interfaces.dpkg-old"
rm -f "${root}/etc/apt/sources.list~" "${root}/etc/apt/trusted.gpg~"
rm -f "${root}"/etc/{passwd,group,shadow,gshadow,subuid,subgid}-
rm -f "${root}"/var/cache/debconf/*-old "${root}"/var/lib/dpkg/*-old
rm -f "${root}"/usr/share/icons/*/icon-theme.cache
rm -rf "${root}"/tmp/* "${root}"/var/tmp/*
rm -f "${root}/root/.bash_history"
find "${root}/var/lib/apt/lists" -type f -delete

# Identity: every system makes its own machine id and SSH host keys on its first boot.
rm -f "${root}/var/lib/dbus/machine-id"
if [ -e "${root}/etc/machine-id" ] || [ -L "${root}/etc/machine-id" ]; then
	rm -f "${root}/etc/machine-id"
	install -m 444 /dev/null "${root}/etc/machine-id"
fi
rm -f "${root}"/etc/ssh/ssh_host_*

ln -nsf ../proc/self/mounts "${root}/etc/mtab"

# Logs of the build.
find "${root}/var/log" -type f -exec truncate -s 0 {} +

# What the image is and how it was made: /etc/rpi-issue and issue.txt in the boot directory
# (the Raspberry Pi's boot partition as /etc/fstab mounts it, else /boot).
print_issue "$(basename "${EXPORT_DIR}")" >"${root}/etc/rpi-issue"
chmod 644 "${root}/etc/rpi-issue"
boot_dir="$(awk '$1 == "BOOTDEV" { print $2; exit }' "${root}/etc/fstab")"
install -m 644 -D "${root}/etc/rpi-issue" "${root}${boot_dir:-/boot}/issue.txt"
