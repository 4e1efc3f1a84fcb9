# Installation as a systemd service (included by the top-level Makefile).
#
#   sudo make install                      # /opt/edged + unit + sysusers + tmpfiles + /etc/edged
#   make install DESTDIR=/tmp/pkg          # staged tree for packaging (no system changes)
#   sudo make uninstall                    # keeps /etc/edged, /var/lib/edged, licences
#   sudo make install RELEASE_KIND=update  # override the release kind (update/platform)
#
# Maintenance gate: installing a *feature* release over another installed version needs a
# maintenance licence covering its release date or an upgrade licence for that version, in
# LICENCE_DIR; otherwise `make install` stops before changing anything and says why.
# Update and platform releases, first installations and reinstalls need no licence.
#
# The daemon lives in its own virtualenv under $(PREFIX) with the pinned
# dependencies from PyPI, so it never depends on or disturbs system Python packages.

PREFIX        ?= /opt/edged
DESTDIR       ?=
# The service user must be able to run the venv's interpreter: prefer the system Python
# (a pyenv or user install under /root or /home is hidden by ProtectHome= and unreadable
# for User=edged).
INSTALL_PYTHON ?= $(shell /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null \
                    && echo /usr/bin/python3 || echo python3)
UNITDIR       ?= /lib/systemd/system
SYSUSERSDIR   ?= /usr/lib/sysusers.d
TMPFILESDIR   ?= /usr/lib/tmpfiles.d
CONFDIR       ?= /etc/edged
BINLINK       ?= /usr/bin/edged
PIP_INSTALL_ARGS ?=
LICENCE_DIR   ?= /var/lib/edged-licences
# Empty: the kind the release declares (edged/licensing/release.py).
RELEASE_KIND  ?=
# Runs the gate from this checkout (tools/ is not part of the installed package) with an
# interpreter that has edged's dependencies: the installed venv's, else the checkout's.
GATE_PYTHON   ?= $(firstword $(wildcard $(INSTALL_ROOT)/bin/python .venv/bin/python) python3)

INSTALL_ROOT := $(DESTDIR)$(PREFIX)
INSTALL_SRC  := pyproject.toml README.md edged drivers

.PHONY: install install-gate install-venv install-files install-activate uninstall check-unit

# The gate first, alone: nothing is touched when it refuses (also under make -j).
install: install-gate
	$(MAKE) --no-print-directory install-venv install-files install-activate
	@echo "edged installed in $(INSTALL_ROOT); next: edit $(CONFDIR)/edged.toml, then"
	@echo "  systemctl enable --now edged"

# The installed tree records its release (VERSION DATE KIND) for the next gate.
RELEASE_FILE := $(INSTALL_ROOT)/share/edged/release

install-gate:
	@if [ ! -e $(RELEASE_FILE) ]; then \
		echo "install gate: first installation in $(INSTALL_ROOT), no maintenance licence needed"; \
	else \
		PYTHONPATH=$(CURDIR) $(GATE_PYTHON) -m tools.licensing.gate --dir $(LICENCE_DIR) \
			--installed $(RELEASE_FILE) $(if $(RELEASE_KIND),--kind $(RELEASE_KIND)); \
	fi

# Build from a clean copy of the sources: setuptools reuses a stale build/ directory in
# the checkout (deleted modules would be shipped) and parallel builds would collide.
install-venv:
	@real=$$(readlink -f "$$(command -v $(INSTALL_PYTHON))"); case "$$real" in \
	  /root/*|/home/*) echo "warning: $(INSTALL_PYTHON) is $$real: the edged service" \
	    "(User=edged, ProtectHome=yes) cannot run it; install python3-venv and use" \
	    "INSTALL_PYTHON=/usr/bin/python3" >&2;; esac
	test -x $(INSTALL_ROOT)/bin/python || $(INSTALL_PYTHON) -m venv $(INSTALL_ROOT)
	set -e; src=$$(mktemp -d); trap 'rm -rf "$$src"' EXIT; \
	cp -R $(INSTALL_SRC) "$$src"/; \
	find "$$src" -name __pycache__ -prune -exec rm -rf {} +; \
	$(INSTALL_ROOT)/bin/python -m pip install -q --disable-pip-version-check --no-compile \
		--upgrade $(PIP_INSTALL_ARGS) "$$src"
	@# A virtualenv is not relocatable: point scripts staged under DESTDIR at their final path.
	if [ -n "$(DESTDIR)" ]; then \
		grep -rlI --null -- '$(INSTALL_ROOT)' $(INSTALL_ROOT)/bin $(INSTALL_ROOT)/pyvenv.cfg \
		| xargs -0 -r sed -i 's|$(INSTALL_ROOT)|$(PREFIX)|g'; \
	fi
	@# Compile once with the final paths in tracebacks; the service cannot write bytecode.
	$(INSTALL_ROOT)/bin/python -m compileall -q -j 0 $(if $(DESTDIR),-s $(DESTDIR) -p /) \
		$(INSTALL_ROOT)/lib >/dev/null

install-files:
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
		$(DESTDIR)$(CONFDIR)/conf.d $(DESTDIR)$(dir $(BINLINK)) \
		$(INSTALL_ROOT)/share/edged $(INSTALL_ROOT)/share/doc/edged
	sed 's|/opt/edged|$(PREFIX)|g' systemd/edged.service > $(DESTDIR)$(UNITDIR)/edged.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/edged.service
	install -m 0644 systemd/edged.sysusers $(DESTDIR)$(SYSUSERSDIR)/edged.conf
	install -m 0644 systemd/edged.tmpfiles $(DESTDIR)$(TMPFILESDIR)/edged.conf
	@# The install code comes from the DMI product UUID/serial, which the kernel makes
	@# readable by root only: let the service group read them, so the daemon (User=edged)
	@# and `sudo -u edged edged license install-code` compute the same code as root does.
	printf '%s\n' '# edged install code: the DMI identity, readable by the service group' \
		'z /sys/class/dmi/id/product_uuid   0440 root edged -' \
		'z /sys/class/dmi/id/product_serial 0440 root edged -' \
		> $(DESTDIR)$(TMPFILESDIR)/edged-identity.conf
	chmod 0644 $(DESTDIR)$(TMPFILESDIR)/edged-identity.conf
	install -m 0644 config/edged.toml $(INSTALL_ROOT)/share/edged/edged.toml.example
	install -m 0644 docs/service.md $(INSTALL_ROOT)/share/doc/edged/service.md
	PYTHONPATH=$(CURDIR) $(GATE_PYTHON) -m tools.licensing.gate --release > $(RELEASE_FILE)
	@# The configuration belongs to the operator: never overwrite it.
	if [ -e $(DESTDIR)$(CONFDIR)/edged.toml ]; then \
		echo "keeping existing $(DESTDIR)$(CONFDIR)/edged.toml" \
		     "(new example: $(PREFIX)/share/edged/edged.toml.example)"; \
	else \
		install -m 0644 config/edged.toml $(DESTDIR)$(CONFDIR)/edged.toml; \
	fi
	ln -sfn $(PREFIX)/bin/edged $(DESTDIR)$(BINLINK)

# Only on a live system (no DESTDIR, systemd running): create the user and the state
# directories now, and make systemd see the new unit.
install-activate:
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemd-sysusers edged.conf && \
		systemd-tmpfiles --create edged.conf && \
		{ systemd-tmpfiles --create edged-identity.conf || true; } && \
		systemctl daemon-reload && \
		{ ! systemctl is-active -q edged || echo "edged is running: systemctl restart edged"; }; \
	fi

uninstall:
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl disable --now edged.service || true; \
	fi
	rm -f $(DESTDIR)$(UNITDIR)/edged.service $(DESTDIR)$(SYSUSERSDIR)/edged.conf \
		$(DESTDIR)$(TMPFILESDIR)/edged.conf $(DESTDIR)$(TMPFILESDIR)/edged-identity.conf
	if [ -L $(DESTDIR)$(BINLINK) ]; then rm -f $(DESTDIR)$(BINLINK); fi
	rm -rf $(INSTALL_ROOT)
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "kept $(CONFDIR), /var/lib/edged and /var/lib/edged-licences (remove by hand to purge)"

# Static checks of the unit: sandbox score (1.5 or better; the threshold is in tenths) and
# `systemd-analyze verify`, which needs ExecStart= to exist, hence a stub in a temp dir.
# verify exits 0 on unknown keys and unparsable values, so any output is a failure.
check-unit:
	systemd-analyze security --offline=true --threshold=15 --no-pager systemd/edged.service
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir -p "$$tmp/bin"; printf '#!/bin/sh\nexit 0\n' > "$$tmp/bin/edged"; \
	chmod 0755 "$$tmp/bin/edged"; \
	sed "s|/opt/edged|$$tmp|g" systemd/edged.service > "$$tmp/edged.service"; \
	out=$$(systemd-analyze verify --man=no "$$tmp/edged.service" 2>&1); \
	if [ -n "$$out" ]; then echo "$$out" >&2; exit 1; fi; echo "systemd-analyze verify: clean"
