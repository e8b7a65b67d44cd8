#!/usr/bin/env bash
# Builds the real servers the tests run (kube-apiserver, etcd, kubectl, nats-server, helm, prometheus, promtool,
# an OpenTelemetry Collector)
# and BuildKit's Dockerfile linter from the Go module proxy into .cache/bin, once per version, and takes the CRDs of
# the kinds the chart can use (prometheus-operator's monitors and rules, cert-manager's certificates) from their
# modules into .cache/crds. With `node` (part of the default) it builds the real node's components: kubelet,
# kube-proxy, kube-scheduler and kube-controller-manager (one binary), containerd, runc, CNI plugins, CoreDNS and
# Traefik, after installing the Debian packages they need. Prints nothing for what is already there, and exits
# non-zero, saying what is missing, when something cannot be built.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.cache/bin"
mkdir -p "$bin"
required() { # go.mod module: the version of module that go.mod requires
  sed -n "s#^\(require \)\?\s*$2 \(v[0-9.]*\)\$#\2#p" "$root/tools/$1"
}
KUBE_VERSION=$(required go.mod k8s.io/kubernetes)
ETCD_VERSION=$(required go.mod go.etcd.io/etcd/server/v3)
NATS_VERSION=v2.12.15
HELM_VERSION=v3.21.4
# Prometheus 3.16.0 (its Go module is versioned v0.<minor>.<patch>).
PROMETHEUS_VERSION=v0.316.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
CERT_MANAGER_VERSION=v1.21.2
BUILDKIT_VERSION=$(required dockerfile-lint/go.mod github.com/moby/buildkit)
RUNC_VERSION=v1.5.3
CNI_PLUGINS_VERSION=v1.10.0
CONTAINERD_VERSION=v2.4.2
COREDNS_VERSION=$(required coredns/go.mod github.com/coredns/coredns)
TRAEFIK_VERSION=$(required traefik/go.mod github.com/traefik/traefik/v3)
OTELCOL_VERSION=$(required otelcol/go.mod go.opentelemetry.io/collector/otelcol)
KUBE_SCORE_VERSION=v1.20.0
KUBECONFORM_VERSION=v0.8.0

current="" # what is being built, named when its build fails
trap 'status=$?; [ $status -eq 0 ] || [ -z "$current" ] || echo "error: building $current failed (exit $status)" >&2' EXIT

building() { # what: announces a build, and stops at once when Go is missing
  current=$1
  if ! command -v go >/dev/null; then
    echo "error: building $1 needs Go 1.26 or later on PATH: install it from https://go.dev/dl/" >&2
    current=""
    exit 1
  fi
  echo "building $1" >&2
}

# A command built in one of our wrapper modules under tools/.
build_module() { # name version folder package [ldflags]
  local out="$bin/$1-$2"
  [ -x "$out" ] && return
  building "$1 $2 (first run only; takes minutes)"
  (cd "$root/tools/$3" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w ${5:-}" -o "$out.tmp" "$4")
  mv "$out.tmp" "$out"
}

build_kube() { # name package
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local pkg=k8s.io/component-base/version
  build_module "$1" "$KUBE_VERSION" . "$2" "-X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
}

build_dockerfile_lint() { # our own program: rebuilt when its source or its dependencies change
  local src="$root/tools/dockerfile-lint"
  local sum; sum=$(cat "$src/main.go" "$src/go.sum" | sha256sum | cut -c1-8)
  DOCKERFILE_LINT="dockerfile-lint-$BUILDKIT_VERSION-$sum"
  local out="$bin/$DOCKERFILE_LINT"
  [ -x "$out" ] && return
  building "dockerfile-lint (BuildKit $BUILDKIT_VERSION)"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp" .)
  mv "$out.tmp" "$out"
}

# cgo=1 before the call builds with cgo; ldflags="..." adds linker flags.
go_install() { # name module@version [go build flags...]
  local out="$bin/$1-${2##*@}"
  [ -x "$out" ] && return
  building "$2"
  local tmp; tmp=$(mktemp -d)
  GOBIN="$tmp" CGO_ENABLED=${cgo:-0} go install -trimpath -ldflags "-s -w ${ldflags:-}" "${@:3}" "$2"
  mv "$tmp/$1" "$out"
  rm -rf "$tmp"
}

# Copies some CRD files of a module (read from the Go module proxy like any other) into .cache/crds/<name>.
module_crds() { # name module@version folder file...
  local out="$root/.cache/crds/$1"
  [ -d "$out" ] && return
  building "the CRDs of $2"
  local tmp json dir; tmp=$(mktemp -d)
  json=$(cd "$tmp" && go mod download -json "$2") || { echo "$json" >&2; rm -rf "$tmp"; return 1; }
  rm -rf "$tmp"
  dir=$(sed -n 's/.*"Dir": "\(.*\)",/\1/p' <<<"$json")
  mkdir -p "$out.tmp"
  for f in "${@:4}"; do cp "$dir/$3/$f" "$out.tmp/"; done
  chmod u+w "$out.tmp"/*
  mv "$out.tmp" "$out"
}

# CNI wants a directory of plugins (containerd's bin_dir): .cache/bin/cni-plugins-<version>, linked as cni-plugins.
build_cni_plugins() {
  local out="$bin/cni-plugins-$CNI_PLUGINS_VERSION"
  [ -d "$out" ] && return
  building "CNI plugins $CNI_PLUGINS_VERSION"
  local m=github.com/containernetworking/plugins
  rm -rf "$out.tmp"
  GOBIN="$out.tmp" CGO_ENABLED=0 go install -trimpath \
    -ldflags "-s -w -X $m/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
    "$m/plugins/main/bridge@$CNI_PLUGINS_VERSION" "$m/plugins/main/loopback@$CNI_PLUGINS_VERSION" \
    "$m/plugins/ipam/host-local@$CNI_PLUGINS_VERSION" "$m/plugins/meta/portmap@$CNI_PLUGINS_VERSION"
  mv "$out.tmp" "$out"
}

build() { # one name of the list below
  case $1 in
    etcd) build_module etcd "$ETCD_VERSION" . ./etcd; ln -sf "etcd-$ETCD_VERSION" "$bin/etcd" ;;
    nats-server) go_install nats-server "github.com/nats-io/nats-server/v2@$NATS_VERSION"
      ln -sf "nats-server-$NATS_VERSION" "$bin/nats-server" ;;
    kube-apiserver) build_kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
      ln -sf "kube-apiserver-$KUBE_VERSION" "$bin/kube-apiserver" ;;
    kubectl) build_kube kubectl k8s.io/kubernetes/cmd/kubectl; ln -sf "kubectl-$KUBE_VERSION" "$bin/kubectl" ;;
    helm) go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"; ln -sf "helm-$HELM_VERSION" "$bin/helm" ;;
    # remove_all_sd leaves out the cloud service discoveries, which the tests do not use, and most of the build time.
    prometheus) go_install prometheus "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" \
      -tags remove_all_sd
      ln -sf "prometheus-$PROMETHEUS_VERSION" "$bin/prometheus" ;;
    promtool) go_install promtool "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" \
      -tags remove_all_sd
      ln -sf "promtool-$PROMETHEUS_VERSION" "$bin/promtool" ;;
    crds)
      module_crds "prometheus-operator-$PROMETHEUS_OPERATOR_VERSION" \
        "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
        example/prometheus-operator-crd monitoring.coreos.com_podmonitors.yaml \
        monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml
      ln -sfn "prometheus-operator-$PROMETHEUS_OPERATOR_VERSION" "$root/.cache/crds/prometheus-operator"
      module_crds "cert-manager-$CERT_MANAGER_VERSION" "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION" \
        deploy/crds cert-manager.io_certificates.yaml cert-manager.io_issuers.yaml
      ln -sfn "cert-manager-$CERT_MANAGER_VERSION" "$root/.cache/crds/cert-manager" ;;
    dockerfile-lint) build_dockerfile_lint; ln -sf "$DOCKERFILE_LINT" "$bin/dockerfile-lint" ;;
    # The real node's components. Debian's iptables, libseccomp-dev and pkg-config come first.
    node-packages) current="the node's Debian packages"; "$root/scripts/install-node-packages.sh" ;;
    # With seccomp, or the chart's RuntimeDefault profile cannot be applied; libseccomp needs cgo.
    runc) cgo=1 go_install runc "github.com/opencontainers/runc@$RUNC_VERSION" -tags seccomp
      ln -sf "runc-$RUNC_VERSION" "$bin/runc" ;;
    cni-plugins) build_cni_plugins; ln -sfn "cni-plugins-$CNI_PLUGINS_VERSION" "$bin/cni-plugins" ;;
    containerd)
      for name in containerd containerd-shim-runc-v2 ctr; do
        ldflags="-X github.com/containerd/containerd/v2/version.Version=${CONTAINERD_VERSION#v}" \
          go_install "$name" "github.com/containerd/containerd/v2/cmd/$name@$CONTAINERD_VERSION"
        ln -sf "$name-$CONTAINERD_VERSION" "$bin/$name"
      done ;;
    # One multi-call binary (tools/node) with a link per command: see tools/node/main.go.
    kube-node) build_kube kube-node ./node
      for name in kubelet kube-proxy kube-scheduler kube-controller-manager; do
        ln -sf "kube-node-$KUBE_VERSION" "$bin/$name-$KUBE_VERSION"
        ln -sf "$name-$KUBE_VERSION" "$bin/$name"
      done ;;
    coredns) build_module coredns "$COREDNS_VERSION" coredns .; ln -sf "coredns-$COREDNS_VERSION" "$bin/coredns" ;;
    traefik) build_module traefik "$TRAEFIK_VERSION" traefik github.com/traefik/traefik/v3/cmd/traefik \
      "-X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION"
      ln -sf "traefik-$TRAEFIK_VERSION" "$bin/traefik" ;;
    # The trace tests' OpenTelemetry Collector: the OTLP receiver and the file exporter only (tools/otelcol).
    otelcol) build_module otelcol "$OTELCOL_VERSION" otelcol . "-X main.version=$OTELCOL_VERSION"
      ln -sf "otelcol-$OTELCOL_VERSION" "$bin/otelcol" ;;
    # The linters `make test` runs on the chart, the rendered workloads, the examples and the metrics. kube-score
    # stands in for kube-linter, and a test carries the dashboard-linter's rules: the module proxy serves neither
    # kube-linter nor Grafana's dashboard-linter.
    kube-score) go_install kube-score "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION"
      ln -sf "kube-score-$KUBE_SCORE_VERSION" "$bin/kube-score" ;;
    kubeconform) go_install kubeconform "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
      ln -sf "kubeconform-$KUBECONFORM_VERSION" "$bin/kubeconform" ;;
    *) echo "error: unknown tool '$1'; the names are: $all node" >&2; exit 2 ;;
  esac
}

node="node-packages runc cni-plugins containerd kube-node coredns traefik"
all="etcd nats-server kube-apiserver kubectl helm prometheus promtool otelcol crds dockerfile-lint kube-score kubeconform $node"
# With names (any of $all, or node for the real node's components) only those are built: `make demo` needs
# nats-server.
for name in ${*:-$all}; do
  if [ "$name" = node ]; then
    for n in $node; do build "$n"; done
  else
    build "$name"
  fi
done
