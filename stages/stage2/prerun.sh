#!/bin/bash -e
# pigen gives every stage its root (a qcow2 layer on the previous stage's image, or a copy);
# copy_previous is the fallback pi-gen's directory mode used.
if [ ! -d "${ROOTFS_DIR}" ]; then
	copy_previous
fi
