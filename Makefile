# subvault: atomic, incremental restic backups of btrfs subvolumes.
#
#   make demo    a real backup on a loop-device btrfs, shown end to end
#   make test    every test, the root-only ones included (run as root)
#   make test-unit  the tests that need neither root nor restic nor a bus (go test -short)
#   make lint    gofmt, go vet, golangci-lint
#   make build   bin/subvault
#   make man     docs/man/ from the --help texts and docs/*.md
#   make completions  build/completions/: the bash, zsh and fish scripts
#   make install DESTDIR=... PREFIX=/usr
#   make deb     build/subvault_<version>_<arch>.deb (dpkg-deb; .ci/deb)
#   make e2e     the package booted under systemd in a container (.ci/e2e)
#   make e2e-boot  the reset at boot, proven by three real boots under QEMU (.ci/e2e-boot)

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/subvault
# The Prometheus alert rules and the Grafana dashboard (docs/monitoring.md):
# files for another program to read, not documentation.
DATADIR    ?= $(PREFIX)/share/subvault
SYSCONFDIR ?= /etc
DESTDIR    ?=
# Where the service's files go. They follow PREFIX, so a plain `make install`
# (PREFIX=/usr/local) writes nothing outside it. But the system bus reads its
# policy only from /usr/share/dbus-1/system.d (or /etc) and polkit its actions
# only from /usr/share/polkit-1/actions, so a working service needs
# PREFIX=/usr, as the Debian package has (with SYSTEMDUNITDIR=/lib/systemd/system).
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
USERUNITDIR    ?= $(PREFIX)/lib/systemd/user
DBUSDIR        ?= $(PREFIX)/share/dbus-1
POLKITDIR      ?= $(PREFIX)/share/polkit-1/actions
CATALOGDIR     ?= $(PREFIX)/lib/systemd/catalog
# udev reads rules from /usr/lib/udev/rules.d (and /lib/udev/rules.d on
# Debian 12, which the package uses) and /etc, not below /usr/local.
UDEVRULESDIR   ?= $(PREFIX)/lib/udev/rules.d
# Where each shell looks for the completions of installed programs.
BASHCOMPDIR    ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR     ?= $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR    ?= $(PREFIX)/share/fish/vendor_completions.d
# The reset at boot (docs/reset.md): initramfs-tools reads hooks and scripts
# only from /usr/share/initramfs-tools (and /etc), dracut its modules only
# from /usr/lib/dracut/modules.d: like the bus policy, they need PREFIX=/usr.
LIBEXECDIR     ?= $(PREFIX)/lib/subvault
INITRAMFSDIR   ?= $(PREFIX)/share/initramfs-tools
DRACUTDIR      ?= $(PREFIX)/lib/dracut/modules.d

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev)
LDFLAGS := -X main.version=$(VERSION)

# .ci/deps installs (root on Debian) or names what is missing, and says which
# go to use; its last line is GO=...
DEPS = .ci/deps
ifeq ($(origin GO),undefined)
GO := $(shell $(DEPS) build | sed -n 's/^GO=//p')
endif

.PHONY: all build completions test test-unit lint demo install clean deps man deb e2e e2e-boot

all: build

# Position-independent, like every other binary on Debian (lintian: hardening-no-pie).
build:
	CGO_ENABLED=1 $(GO) build -trimpath -buildmode=pie -ldflags "$(LDFLAGS)" -o bin/subvault ./cmd/subvault

# The shells' completion scripts, written by the binary just built (cobra
# makes them from the commands, so they are never out of step with it).
completions: build
	mkdir -p build/completions
	bin/subvault completion bash > build/completions/subvault
	bin/subvault completion zsh > build/completions/_subvault
	bin/subvault completion fish > build/completions/subvault.fish

test:
	@$(DEPS) test >/dev/null
	@if [ "$$(id -u)" != 0 ]; then echo "make test: not root: the btrfs, mount-namespace and bus tests will be SKIPPED (run as root to run them all)" >&2; fi
	$(GO) vet ./...
	@.ci/gotest $(GO) -count=1 -timeout 45m ./...

# Every test that needs nothing but Go (no root, loop device, bus or
# restic: their helpers skip under -short), in seconds, as any user.
test-unit:
	$(GO) test -short ./...

# The last step: api/client, what widgets and scripts link, pulls in nothing
# of subvault but the wire contract (api/contract). depguard checks what the
# two import; this checks what those imports pull in, all the way down.
CLIENT_DEPS_ALLOWED = github.com/subvault/subvault/api/client github.com/subvault/subvault/api/contract

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...
	$$($(DEPS) lint | sed -n 's/^GOLANGCI_LINT=//p') run ./...
	@bad=$$($(GO) list -deps ./api/client | grep '^github.com/subvault/subvault/' | grep -vxF $(CLIENT_DEPS_ALLOWED:%=-e %)); \
	if [ -n "$$bad" ]; then echo "api/client pulls in server packages (go list -deps ./api/client): $$bad" | tr '\n' ' '; echo; exit 1; fi

# The man pages are generated (cmd/subvault/cmd_man.go: cobra's doc
# generator and go-md2man) and committed; a test fails when they are stale.
man:
	$(GO) run ./cmd/subvault man --dir docs/man

demo: build
	@$(DEPS) demo >/dev/null
	@.ci/demo

SERVICE_FILES = packaging/subvault.service packaging/org.subvault.Subvault1.service \
  packaging/org.subvault.Subvault1.conf packaging/org.subvault.policy \
  packaging/subvault.catalog packaging/subvault-notify.service \
  packaging/subvault-target@.service packaging/udev/90-subvault.rules \
  packaging/initrd-config packaging/initramfs-tools/hooks/subvault \
  packaging/initramfs-tools/scripts/local-premount/subvault \
  packaging/dracut/90subvault/module-setup.sh packaging/subvault-reset.service

# The units and the activation file name /usr/bin/subvault; sed points them
# at BINDIR.
install: build completions
	@for f in $(SERVICE_FILES); do \
	  [ -f "$$f" ] || { echo "make install: $$f is missing; the service cannot be installed without it" >&2; exit 1; }; \
	done
	install -D -m 0755 bin/subvault $(DESTDIR)$(BINDIR)/subvault
	install -D -m 0644 packaging/config.example.yaml $(DESTDIR)$(DOCDIR)/config.example.yaml
	for f in docs/man/*.[1-8]; do \
	  [ -e "$$f" ] || continue; \
	  s=$${f##*.}; install -D -m 0644 "$$f" "$(DESTDIR)$(MANDIR)/man$$s/$$(basename $$f)"; \
	done
	for f in docs/*.md; do install -D -m 0644 "$$f" "$(DESTDIR)$(DOCDIR)/$$(basename $$f)"; done
	install -d $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(USERUNITDIR) $(DESTDIR)$(DBUSDIR)/system-services
	sed 's|/usr/bin/subvault|$(BINDIR)/subvault|g' packaging/subvault.service > $(DESTDIR)$(SYSTEMDUNITDIR)/subvault.service
	sed 's|/usr/bin/subvault|$(BINDIR)/subvault|g' packaging/subvault-notify.service > $(DESTDIR)$(USERUNITDIR)/subvault-notify.service
	sed 's|/usr/bin/subvault|$(BINDIR)/subvault|g' packaging/org.subvault.Subvault1.service > $(DESTDIR)$(DBUSDIR)/system-services/org.subvault.Subvault1.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/subvault.service $(DESTDIR)$(USERUNITDIR)/subvault-notify.service \
	  $(DESTDIR)$(DBUSDIR)/system-services/org.subvault.Subvault1.service
	install -D -m 0644 packaging/org.subvault.Subvault1.conf $(DESTDIR)$(DBUSDIR)/system.d/org.subvault.Subvault1.conf
	install -D -m 0644 packaging/org.subvault.policy $(DESTDIR)$(POLKITDIR)/org.subvault.policy
	install -D -m 0644 packaging/subvault.catalog $(DESTDIR)$(CATALOGDIR)/subvault.catalog
	install -D -m 0644 packaging/subvault-target@.service $(DESTDIR)$(SYSTEMDUNITDIR)/subvault-target@.service
	install -D -m 0644 packaging/udev/90-subvault.rules $(DESTDIR)$(UDEVRULESDIR)/90-subvault.rules
	install -D -m 0644 build/completions/subvault $(DESTDIR)$(BASHCOMPDIR)/subvault
	install -D -m 0644 build/completions/_subvault $(DESTDIR)$(ZSHCOMPDIR)/_subvault
	install -D -m 0644 build/completions/subvault.fish $(DESTDIR)$(FISHCOMPDIR)/subvault.fish
	install -D -m 0644 packaging/prometheus/subvault-alerts.yml $(DESTDIR)$(DATADIR)/prometheus/subvault-alerts.yml
	install -D -m 0644 packaging/grafana/subvault-dashboard.json $(DESTDIR)$(DATADIR)/grafana/subvault-dashboard.json
	# The reset at boot. On the build machine the hook and the dracut module
	# run subvault at BINDIR and initrd-config at LIBEXECDIR; in the initrd
	# subvault is always /usr/bin/subvault.
	install -d $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(INITRAMFSDIR)/hooks $(DESTDIR)$(INITRAMFSDIR)/scripts/local-premount $(DESTDIR)$(DRACUTDIR)/90subvault
	sed 's|^subvault=.*|subvault=$${SUBVAULT:-$(BINDIR)/subvault}|' packaging/initrd-config > $(DESTDIR)$(LIBEXECDIR)/initrd-config
	for f in packaging/initramfs-tools/hooks/subvault packaging/dracut/90subvault/module-setup.sh; do \
	  sed -e 's|^SUBVAULT=/usr/bin/subvault$$|SUBVAULT=$(BINDIR)/subvault|' -e 's|^INITRD_CONFIG=/usr/lib/subvault/initrd-config$$|INITRD_CONFIG=$(LIBEXECDIR)/initrd-config|' $$f \
	    > $(DESTDIR)$$(case $$f in *hooks*) echo $(INITRAMFSDIR)/hooks/subvault;; *) echo $(DRACUTDIR)/90subvault/module-setup.sh;; esac); \
	done
	chmod 0755 $(DESTDIR)$(LIBEXECDIR)/initrd-config $(DESTDIR)$(INITRAMFSDIR)/hooks/subvault $(DESTDIR)$(DRACUTDIR)/90subvault/module-setup.sh
	install -m 0755 packaging/initramfs-tools/scripts/local-premount/subvault $(DESTDIR)$(INITRAMFSDIR)/scripts/local-premount/subvault
	install -m 0644 packaging/subvault-reset.service $(DESTDIR)$(DRACUTDIR)/90subvault/subvault-reset.service

# The Debian package: make install into a staging tree, then dpkg-deb.
deb: build
	GO=$(GO) .ci/deb

clean:
	rm -rf bin/ build/
	$(GO) clean -testcache

# The package under real systemd: debootstrap (cached in ~/.cache/subvault),
# systemd-nspawn -b, dpkg -i, then every step of the end-to-end test.
e2e: deb
	@$(DEPS) e2e >/dev/null
	@.ci/e2e

# The reset at boot under QEMU: a debootstrapped btrfs image (cached in
# /var/cache/subvault-ci/boot), the package installed into a copy, three boots.
e2e-boot: deb
	@$(DEPS) e2e-boot >/dev/null
	@.ci/e2e-boot
