# The Debian package (included by the top-level Makefile).
#
#   make deb                                   # dist/edged_<version>_<arch>.deb
#   make deb VERSION=0.1.1 RELEASE_KIND=update # a test or pre-release build
#   make deb DEB_ARCH=arm64                    # for arm64 gateways (wheels for aarch64)
#
# packaging/deb/build.sh stages the tree with `make install DESTDIR=…` (a virtualenv from
# Debian's /usr/bin/python3 in /opt/edged) and packs it with `dpkg-deb --build`; the wheels
# of the pinned dependencies are kept in DEB_WHEELHOUSE between builds.

DEB_OUT        ?= dist
DEB_WHEELHOUSE ?= build/wheels
DEB_COMPRESS   ?= xz
# Empty: this machine's architecture.
DEB_ARCH       ?=

.PHONY: deb

deb:
	VERSION='$(VERSION)' RELEASE_KIND='$(RELEASE_KIND)' RELEASE_DATE='$(RELEASE_DATE)' \
	OUT='$(abspath $(DEB_OUT))' WHEELHOUSE='$(abspath $(DEB_WHEELHOUSE))' \
	DEB_COMPRESS='$(DEB_COMPRESS)' DEB_ARCH='$(DEB_ARCH)' packaging/deb/build.sh
