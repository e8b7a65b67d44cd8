#!/usr/bin/env bash
# Builds the real servers the tests run (kube-apiserver, etcd, kubectl, nats-server, helm, prometheus, promtool)
# and BuildKit's Dockerfile linter from the Go module proxy into .cache/bin, once per version, and takes the CRDs of
# the kinds the chart can use (prometheus-operator's monitors and rules, cert-manager's certificates) from their
# modules into .cache/crds. Prints nothing for what is already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.cache/bin"
mkdir -p "$bin"
KUBE_VERSION=$(sed -n 's/^\s*k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$root/tools/go.mod")
ETCD_VERSION=$(sed -n 's/^\s*go.etcd.io\/etcd\/server\/v3 \(v[0-9.]*\)$/\1/p' "$root/tools/go.mod")
NATS_VERSION=v2.12.15
HELM_VERSION=v3.21.4
# Prometheus 3.16.0 (its Go module is versioned v0.<minor>.<patch>).
PROMETHEUS_VERSION=v0.316.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
CERT_MANAGER_VERSION=v1.21.2
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

go_install() { # name module@version [go build flags...]
  local out="$bin/$1-${2##*@}"
  [ -x "$out" ] && return
  echo "building $2" >&2
  local tmp; tmp=$(mktemp -d)
  GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "${@:3}" "$2"
  mv "$tmp/$1" "$out"
  rm -rf "$tmp"
}

# Copies some CRD files of a module (read from the Go module proxy like any other) into .cache/crds/<name>.
module_crds() { # name module@version folder file...
  local out="$root/.cache/crds/$1"
  [ -d "$out" ] && return
  echo "fetching the CRDs of $2" >&2
  local tmp json dir; tmp=$(mktemp -d)
  json=$(cd "$tmp" && go mod download -json "$2") || { echo "$json" >&2; rm -rf "$tmp"; return 1; }
  rm -rf "$tmp"
  dir=$(sed -n 's/.*"Dir": "\(.*\)",/\1/p' <<<"$json")
  mkdir -p "$out.tmp"
  for f in "${@:4}"; do cp "$dir/$3/$f" "$out.tmp/"; done
  chmod u+w "$out.tmp"/*
  mv "$out.tmp" "$out"
}

# With names (etcd, nats-server, kube-apiserver, kubectl, helm, prometheus, promtool, crds, dockerfile-lint) only
# those are built: `make demo` needs nats-server.
wanted=${*:-etcd nats-server kube-apiserver kubectl helm prometheus promtool crds dockerfile-lint}
want() { [[ " $wanted " == *" $1 "* ]]; }
want etcd && build_etcd && ln -sf "etcd-$ETCD_VERSION" "$bin/etcd"
want nats-server && go_install nats-server "github.com/nats-io/nats-server/v2@$NATS_VERSION" &&
  ln -sf "nats-server-$NATS_VERSION" "$bin/nats-server"
want kube-apiserver && build_kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver &&
  ln -sf "kube-apiserver-$KUBE_VERSION" "$bin/kube-apiserver"
want kubectl && build_kube kubectl k8s.io/kubernetes/cmd/kubectl && ln -sf "kubectl-$KUBE_VERSION" "$bin/kubectl"
want helm && go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" && ln -sf "helm-$HELM_VERSION" "$bin/helm"
# remove_all_sd leaves out the cloud service discoveries, which the tests do not use, and most of the build time.
want prometheus && go_install prometheus "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" \
  -tags remove_all_sd && ln -sf "prometheus-$PROMETHEUS_VERSION" "$bin/prometheus"
want promtool && go_install promtool "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" \
  -tags remove_all_sd && ln -sf "promtool-$PROMETHEUS_VERSION" "$bin/promtool"
want crds && module_crds "prometheus-operator-$PROMETHEUS_OPERATOR_VERSION" \
  "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" example/prometheus-operator-crd \
  monitoring.coreos.com_podmonitors.yaml monitoring.coreos.com_servicemonitors.yaml \
  monitoring.coreos.com_prometheusrules.yaml &&
  ln -sfn "prometheus-operator-$PROMETHEUS_OPERATOR_VERSION" "$root/.cache/crds/prometheus-operator"
want crds && module_crds "cert-manager-$CERT_MANAGER_VERSION" "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION" \
  deploy/crds cert-manager.io_certificates.yaml cert-manager.io_issuers.yaml &&
  ln -sfn "cert-manager-$CERT_MANAGER_VERSION" "$root/.cache/crds/cert-manager"
want dockerfile-lint && build_dockerfile_lint && ln -sf "$DOCKERFILE_LINT" "$bin/dockerfile-lint"
# The linters `make test` runs on the chart, the rendered workloads, the examples and the metrics (built only when
# no names are given, or named: kube-score, kubeconform). kube-score stands in for kube-linter, and a test carries
# the dashboard-linter's rules: neither kube-linter nor Grafana's dashboard-linter is served by the module proxy.
KUBE_SCORE_VERSION=v1.20.0
KUBECONFORM_VERSION=v0.8.0
[ $# -eq 0 ] && wanted="$wanted kube-score kubeconform"
want kube-score && go_install kube-score "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION" &&
  ln -sf "kube-score-$KUBE_SCORE_VERSION" "$bin/kube-score"
want kubeconform && go_install kubeconform "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" &&
  ln -sf "kubeconform-$KUBECONFORM_VERSION" "$bin/kubeconform"
exit 0
