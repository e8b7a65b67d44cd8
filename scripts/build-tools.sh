#!/usr/bin/env bash
# Builds the real servers the tests run (kube-apiserver, etcd, kubectl, nats-server, helm) and BuildKit's
# Dockerfile linter from the Go module proxy into .cache/bin, once per version. Prints nothing for what is
# already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.cache/bin"
mkdir -p "$bin"
KUBE_VERSION=$(sed -n 's/^\s*k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$root/tools/go.mod")
ETCD_VERSION=$(sed -n 's/^\s*go.etcd.io\/etcd\/server\/v3 \(v[0-9.]*\)$/\1/p' "$root/tools/go.mod")
NATS_VERSION=v2.12.15
HELM_VERSION=v3.21.4
BUILDKIT_VERSION=$(sed -n 's/^\s*github.com\/moby\/buildkit \(v[0-9.]*\)$/\1/p' "$root/tools/dockerfile-lint/go.mod")

build_kube() { # name package
  local out="$bin/$1-$KUBE_VERSION"
  [ -x "$out" ] && return
  echo "building $1 $KUBE_VERSION (first run only; takes minutes)" >&2
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local pkg=k8s.io/component-base/version
  (cd "$root/tools" && CGO_ENABLED=0 go build -trimpath -o "$out.tmp" \
    -ldflags "-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor" "$2")
  mv "$out.tmp" "$out"
}

build_etcd() {
  local out="$bin/etcd-$ETCD_VERSION"
  [ -x "$out" ] && return
  echo "building etcd $ETCD_VERSION" >&2
  (cd "$root/tools" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp" ./etcd)
  mv "$out.tmp" "$out"
}

build_dockerfile_lint() { # our own program: rebuilt when its source or its dependencies change
  local src="$root/tools/dockerfile-lint"
  local sum; sum=$(cat "$src/main.go" "$src/go.sum" | sha256sum | cut -c1-8)
  DOCKERFILE_LINT="dockerfile-lint-$BUILDKIT_VERSION-$sum"
  local out="$bin/$DOCKERFILE_LINT"
  [ -x "$out" ] && return
  echo "building dockerfile-lint (BuildKit $BUILDKIT_VERSION)" >&2
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp" .)
  mv "$out.tmp" "$out"
}

go_install() { # name module@version
  local out="$bin/$1-${2##*@}"
  [ -x "$out" ] && return
  echo "building $2" >&2
  local tmp; tmp=$(mktemp -d)
  GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "$2"
  mv "$tmp/$1" "$out"
  rm -rf "$tmp"
}

# With names (etcd, nats-server, kube-apiserver, kubectl, helm, dockerfile-lint) only those are built: `make demo`
# needs nats-server.
wanted=${*:-etcd nats-server kube-apiserver kubectl helm dockerfile-lint}
want() { [[ " $wanted " == *" $1 "* ]]; }
want etcd && build_etcd && ln -sf "etcd-$ETCD_VERSION" "$bin/etcd"
want nats-server && go_install nats-server "github.com/nats-io/nats-server/v2@$NATS_VERSION" &&
  ln -sf "nats-server-$NATS_VERSION" "$bin/nats-server"
want kube-apiserver && build_kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver &&
  ln -sf "kube-apiserver-$KUBE_VERSION" "$bin/kube-apiserver"
want kubectl && build_kube kubectl k8s.io/kubernetes/cmd/kubectl && ln -sf "kubectl-$KUBE_VERSION" "$bin/kubectl"
want helm && go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" && ln -sf "helm-$HELM_VERSION" "$bin/helm"
want dockerfile-lint && build_dockerfile_lint && ln -sf "$DOCKERFILE_LINT" "$bin/dockerfile-lint"
exit 0
