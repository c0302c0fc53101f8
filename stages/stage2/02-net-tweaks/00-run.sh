#!/bin/bash -e
# Wireless: wlan0 via ifupdown + wpa_supplicant; WPA_COUNTRY, WPA_ESSID and WPA_PASSWORD.
#
# The passphrase never reaches the image or the build log as text: wpa_passphrase reads it
# from the environment through a pipe inside the chroot and only the derived PSK is stored.

install -m 644 -D files/wlan0 "${ROOTFS_DIR}/etc/network/interfaces.d/wlan0"
conf=/etc/wpa_supplicant/wpa_supplicant.conf
install -m 600 -D files/wpa_supplicant.conf "${ROOTFS_DIR}${conf}"
if [ -n "${WPA_COUNTRY}" ]; then
	printf 'country=%s\n' "${WPA_COUNTRY}" >>"${ROOTFS_DIR}${conf}"
fi

if [ -n "${WPA_ESSID}" ]; then
	if [ -n "${WPA_PASSWORD}" ]; then
		on_chroot <<'EOF'
set -o pipefail
printf '%s\n' "${WPA_PASSWORD}" | wpa_passphrase "${WPA_ESSID}" \
	| sed -e '/^[[:space:]]*#/d' >>/etc/wpa_supplicant/wpa_supplicant.conf
EOF
	else
		# An open network; the SSID in hex needs no quoting whatever it contains.
		ssid_hex="$(printf '%s' "${WPA_ESSID}" | od -An -tx1 | tr -d ' \n')"
		printf '\nnetwork={\n\tssid=%s\n\tkey_mgmt=NONE\n}\n' "${ssid_hex}" >>"${ROOTFS_DIR}${conf}"
	fi
fi

# Raspberry Pi: the built-in wireless starts soft-blocked unless a country is set (its
# regulatory domain decides which channels may be used). systemd-rfkill restores these states;
# the names are those of the Raspberry Pi kernels (mmcnr) and of Debian's (mmc).
if [ "${TARGET_RASPI}" = 1 ]; then
	state=1
	if [ -n "${WPA_COUNTRY}" ]; then
		state=0
	fi
	mkdir -p "${ROOTFS_DIR}/var/lib/systemd/rfkill"
	for device in platform-3f300000.mmcnr:wlan platform-fe300000.mmcnr:wlan \
		platform-3f300000.mmc:wlan platform-fe300000.mmc:wlan; do
		printf '%s\n' "${state}" >"${ROOTFS_DIR}/var/lib/systemd/rfkill/${device}"
	done
fi
