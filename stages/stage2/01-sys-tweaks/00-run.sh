#!/bin/bash -e
# The lite system's settings: SSH (keys, key-only login, host keys made on first boot), the
# first-boot resize, a serial console, the first user's groups, the console font and keymap,
# and REDUCED_FOOTPRINT's clean-up of what debootstrap installed before dpkg's excludes.

# --- SSH
install -m 644 -D files/pigen-ssh-host-keys.service "${ROOTFS_DIR}/etc/systemd/system/pigen-ssh-host-keys.service"
pubkey_only="${ROOTFS_DIR}/etc/ssh/sshd_config.d/50-pigen-pubkey-only.conf"
if [ "${PUBKEY_ONLY_SSH}" = 1 ]; then
	install -m 644 -D files/pubkey-only.conf "${pubkey_only}"
else
	rm -f "${pubkey_only}"
fi

home="${ROOTFS_DIR}/home/${FIRST_USER_NAME}"
if [ -n "${PUBKEY_SSH_FIRST_USER}" ]; then
	install -d -m 700 "${home}/.ssh"
	{
		printf '%s\n' "${PUBKEY_SSH_FIRST_USER}"
		if [ -n "${PUBKEY2_SSH_FIRST_USER}" ]; then
			printf '%s\n' "${PUBKEY2_SSH_FIRST_USER}"
		fi
	} >"${home}/.ssh/authorized_keys"
	chmod 600 "${home}/.ssh/authorized_keys"
	on_chroot <<EOF
chown -R "${FIRST_USER_NAME}:" "/home/${FIRST_USER_NAME}/.ssh"
EOF
fi

# --- First-boot resize of the root partition and file system
install -m 755 -D files/resize-rootfs "${ROOTFS_DIR}/usr/lib/pigen/resize-rootfs"
install -m 644 -D files/pigen-resize-rootfs.service "${ROOTFS_DIR}/etc/systemd/system/pigen-resize-rootfs.service"

# --- Serial console: ttyS0 on a PC (always present); on a Raspberry Pi the PL011 port when it
# exists (a unit waiting for a missing port would hold up getty.target for 90 seconds).
serial_rule="${ROOTFS_DIR}/etc/udev/rules.d/90-pigen-serial-getty.rules"
if [ "${TARGET_RASPI}" = 1 ]; then
	install -m 644 -D files/serial-getty.rules "${serial_rule}"
	serial_unit=""
else
	rm -f "${serial_rule}"
	serial_unit=serial-getty@ttyS0.service
fi

# --- Groups of the first user (those that exist in this image).
extra_groups="input netdev"
user_groups="adm dialout cdrom audio video plugdev users sudo games input netdev"
if [ "${TARGET_RASPI}" = 1 ]; then
	extra_groups="${extra_groups} gpio i2c spi"
	user_groups="${user_groups} gpio i2c spi"
fi

on_chroot <<EOF
if [ "${ENABLE_SSH}" = 1 ]; then
	systemctl unmask ssh.service
	systemctl enable ssh.service
else
	systemctl disable ssh.service
	systemctl mask ssh.service
fi
systemctl enable pigen-ssh-host-keys.service
systemctl enable pigen-resize-rootfs.service
if [ -n "${serial_unit}" ]; then
	systemctl enable "${serial_unit}"
fi

for group in ${extra_groups}; do
	groupadd -f -r "\${group}"
done
member=""
for group in ${user_groups}; do
	if getent group "\${group}" >/dev/null; then
		member="\${member:+\${member},}\${group}"
	fi
done
usermod -a -G "\${member}" "${FIRST_USER_NAME}"

setupcon --force --save-only -v
EOF

# --- REDUCED_FOOTPRINT: what debootstrap unpacked before stage0 wrote dpkg's path-excludes.
if [ "${REDUCED_FOOTPRINT}" = 1 ]; then
	on_chroot <<'EOF'
find /usr/share/doc -mindepth 1 -type f ! -name copyright -delete
find /usr/share/doc -mindepth 1 -type d -empty -delete
rm -rf /usr/share/man /usr/share/groff /usr/share/info /usr/share/lintian /usr/share/linda /var/cache/man
find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'da*' ! -name 'de*' ! -name 'en*' \
	! -name 'es*' ! -name 'fi*' ! -name 'fr*' ! -name 'is*' ! -name 'nb*' ! -name 'ru*' \
	! -name 'sv*' ! -name 'zh*' ! -name locale.alias -exec rm -rf {} +
EOF
fi
