# subvault: atomic, incremental restic backups of btrfs subvolumes.
#
#   make demo    a real backup on a loop-device btrfs, shown end to end
#   make test    every test, the root-only ones included (run as root)
#   make lint    gofmt, go vet, golangci-lint
#   make build   bin/subvault
#   make man     docs/man/ from the --help texts and docs/*.md
#   make install DESTDIR=... PREFIX=/usr

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/subvault
SYSCONFDIR ?= /etc
DESTDIR    ?=

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev)
LDFLAGS := -X main.version=$(VERSION)

# .ci/deps installs (root on Debian) or names what is missing, and says which
# go to use; its last line is GO=...
DEPS = .ci/deps
ifeq ($(origin GO),undefined)
GO := $(shell $(DEPS) build | sed -n 's/^GO=//p')
endif

.PHONY: all build test test-unit lint demo install clean deps man

all: build

build:
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/subvault ./cmd/subvault

test:
	@$(DEPS) test >/dev/null
	@if [ "$$(id -u)" != 0 ]; then echo "make test: not root: the btrfs, mount-namespace and bus tests will be SKIPPED (run as root to run them all)" >&2; fi
	$(GO) vet ./...
	@.ci/gotest $(GO) -count=1 -timeout 15m ./...

# Tests that need nothing but Go: fast, any user.
test-unit:
	$(GO) test -count=1 -short ./daemon/config/ ./btrfs/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...
	$$($(DEPS) lint | sed -n 's/^GOLANGCI_LINT=//p') run ./...

# The man pages are generated (cmd/subvault/man.go) and committed; a test
# fails when they are stale.
man:
	$(GO) run ./cmd/subvault man --dir docs/man

demo: build
	@$(DEPS) demo >/dev/null
	@.ci/demo

install: build
	install -D -m 0755 bin/subvault $(DESTDIR)$(BINDIR)/subvault
	install -D -m 0644 packaging/config.example.yaml $(DESTDIR)$(DOCDIR)/config.example.yaml
	for f in docs/man/*.[1-8]; do \
	  [ -e "$$f" ] || continue; \
	  s=$${f##*.}; install -D -m 0644 "$$f" "$(DESTDIR)$(MANDIR)/man$$s/$$(basename $$f)"; \
	done
	for f in docs/*.md; do install -D -m 0644 "$$f" "$(DESTDIR)$(DOCDIR)/$$(basename $$f)"; done

clean:
	rm -rf bin/ build/
	$(GO) clean -testcache
