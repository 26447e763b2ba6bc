# Berth — build, run, test, bench, install.
#
#   make run     build release binaries and run berthd in the foreground (as root)
#   make test    install missing Debian test dependencies (as root), then fmt, clippy,
#                unit and integration tests
#   make bench   side-by-side benchmarks against the incumbents

SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
RELEASE_BINS := target/release/berthd target/release/berthctl target/release/berth-shim target/release/berth-runtime

# Debian packages the tests and benchmarks drive: ctr and containerd (the incumbent and a
# foreign client of our API); busybox-static for the test images; skopeo and umoci to check
# the image archives berthctl writes; docker-registry, apache2-utils (htpasswd), curl and
# openssl for the registry tests.
DEB_PACKAGES := libseccomp-dev pkg-config crun containerd busybox-static skopeo umoci docker-registry apache2-utils curl openssl

# As root the test dependencies are installed, so integration tests must not skip.
ifeq ($(shell id -u),0)
export BERTH_REQUIRE_TOOLS ?= 1
endif

.PHONY: all build release run test deps lint bench install clean test-images

all: build

build: deps
	$(CARGO) build --workspace --bins

release: deps
	$(CARGO) build --release --bins

run: release
	./target/release/berthd

# Installs what is missing; needs root (apt-get update first, once).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (run make test as root to install them)"; \
		else echo "installing:$$missing"; apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

test: deps lint
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test --workspace --locked

# OCI layout and docker-save tars of small busybox-based images (no network needed).
test-images: deps
	$(CARGO) run --locked -p berth-integration --bin berth-testimages -- target/test-images

bench: deps
	$(CARGO) build --release --bins --locked
	$(CARGO) run --release --locked -p berth-integration --bin berth-bench

install: release
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(RELEASE_BINS) $(DESTDIR)$(PREFIX)/bin/
	install -d -m 0755 $(DESTDIR)/etc/berth
	[ -e $(DESTDIR)/etc/berth/config.toml ] || ./target/release/berthd config default > $(DESTDIR)/etc/berth/config.toml

clean:
	$(CARGO) clean
