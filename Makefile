# Everything installs from the project's own files into .cache/ (ignored): Node 24 from the npm registry when the
# machine's Node is older, npm packages from package-lock.json, and the test servers from the Go module proxy.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

NODE_MAJOR := $(shell node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
ifeq ($(shell [ $(NODE_MAJOR) -ge 24 ] && echo yes),yes)
NODE_STAMP :=
else
# Hookyard runs TypeScript directly with Node 24's type stripping; older Node gets Node 24 from npm.
export PATH := $(CURDIR)/.cache/node24/node_modules/.bin:$(PATH)
NODE_STAMP := .cache/node24/node_modules/.bin/node
endif

.PHONY: all deps tools node-tools generate lint typecheck build test e2e unit demo dev clean

all: test

$(NODE_STAMP):
	npm install --prefix .cache/node24 --no-save --no-package-lock node@24

# `npm install` rather than `npm ci`: the registry here lacks some other platforms' optional packages of
# biome, which `npm ci` insists on finding in the lock file. The lock file still pins every version.
node_modules/.stamp: package.json package-lock.json | $(NODE_STAMP)
	npm install --no-audit --no-fund
	touch $@

deps: node_modules/.stamp

tools:
	scripts/build-tools.sh

# Only the real node's components (part of `make tools`): kubelet and the other node daemons, containerd, runc, CNI
# plugins, CoreDNS, Traefik, and the Debian packages they need.
node-tools:
	scripts/build-tools.sh node

# The production bundle in dist/ (what the image runs); esbuild takes about a second, and only when a source changed.
dist/cli.mjs: node_modules/.stamp scripts/build.ts $(shell find src -type f)
	npm run build

build: dist/cli.mjs

generate: deps
	node scripts/generate-crds.ts
	node scripts/generate-dashboard.ts

lint: deps
	npx biome check .

typecheck: deps
	npx tsc -p tsconfig.json

# The whole suite: lint, types, every test against real etcd, kube-apiserver and nats-server, then the real node.
test: deps tools lint typecheck build
	node test/harness/run.ts node --test --test-reporter=spec --test-timeout=300000 'test/{unit,integration}/**/*.test.ts'
	$(MAKE) e2e

# The real-node suite alone: a single-node cluster in a network namespace of its own (test/harness/node/), the
# images imported into it, and test/e2e/ run against it. Needs root. The node's addresses are fixed, so a second
# run on the same machine waits for the first (flock). E2E_TESTS='test/e2e/node.test.ts' runs a part.
E2E_TESTS ?= test/e2e/*.test.ts
e2e: deps tools build
	flock /run/hookyard-e2e.lock node test/harness/node/run.ts node --test --test-reporter=spec --test-timeout=600000 --test-concurrency=1 '$(E2E_TESTS)'

# The main job on the embedded default: dev mode on examples/, each provider's documented webhooks played. It uses
# a nats-server 2.12+ on the PATH, else the cached one (built with Go when missing); NATS_URL=... uses that NATS.
demo: deps
	node scripts/demo.ts $(if $(NATS_URL),--nats-url $(NATS_URL))

# hookyard dev on examples/ (Ctrl-C stops); ARGS='--sink http://127.0.0.1:9000' adds flags.
dev: deps
	node src/cli.ts dev -f examples/ $(ARGS)

clean:
	rm -rf .cache node_modules
