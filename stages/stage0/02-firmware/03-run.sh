#!/bin/bash -e
# Raspberry Pi boot firmware and kernels, chosen by RASPI_FIRMWARE (which pi-gen's package
# list names cannot express, so this script picks the list):
#
#   raspi-boot-<RASPI_FIRMWARE>[-<RELEASE>][-<TARGET_ARCH>]
#
# the first that exists of -RELEASE-ARCH, -RELEASE, -ARCH and no suffix (the order of
# NN-packages-sys-debian*). "raspberrypi" lists name packages of the Raspberry Pi archive
# (kept in tests/raspi-packages.txt, since they cannot be resolved where the tests run);
# "debian" lists name Debian's raspi-firmware and kernels (resolved by tests/package_lists.rs).

if [ "${TARGET_RASPI}" != 1 ]; then
	exit 0
fi

list=""
for candidate in "raspi-boot-${RASPI_FIRMWARE}-${RELEASE}-${TARGET_ARCH}" \
	"raspi-boot-${RASPI_FIRMWARE}-${RELEASE}" \
	"raspi-boot-${RASPI_FIRMWARE}-${TARGET_ARCH}" \
	"raspi-boot-${RASPI_FIRMWARE}"; do
	if [ -f "${candidate}" ]; then
		list="${candidate}"
		break
	fi
done
if [ -z "${list}" ]; then
	echo "03-run.sh: no raspi-boot-${RASPI_FIRMWARE}* list for ${RELEASE} ${TARGET_ARCH} in $(pwd)" >&2
	exit 1
fi

# Words of the list, comments stripped; each must look like a package name, so that it can go
# into the chroot script as is.
packages=()
while read -r -a words; do
	for word in "${words[@]}"; do
		if [[ ! "${word}" =~ ^[a-z0-9][a-z0-9+.-]*$ ]]; then
			echo "03-run.sh: ${list}: not a package name: ${word}" >&2
			exit 1
		fi
		packages+=("${word}")
	done
done < <(sed -e 's/#.*//' "${list}")
if [ "${#packages[@]}" -eq 0 ]; then
	exit 0
fi

log "Installing ${list} '${packages[*]}'"
on_chroot <<EOF
apt-get -o Acquire::Retries=3 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install --no-install-recommends -y ${packages[*]}
apt-get clean
EOF
