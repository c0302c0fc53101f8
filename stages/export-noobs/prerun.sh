#!/bin/bash -e
# NOOBS bundles are not made by pigen yet: no stock stage has an EXPORT_NOOBS file, and the
# bundle format (boot and root tarballs plus os.json / partitions.json for the NOOBS and PINN
# installers) needs a deployed image that this stage does not receive. A stage of your own with
# EXPORT_NOOBS gets this note instead of a bundle; its disk image is exported as usual.
log "export-noobs: NOOBS bundles are not supported by pigen yet; nothing made for ${IMG_NAME}${IMG_SUFFIX}"
