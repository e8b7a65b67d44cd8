// Command coredns is CoreDNS with only the plugins the real node's cluster DNS uses. CoreDNS's own main imports
// every plugin (core/plugin/zplugin.go, about 12 minutes to build cold here); this one imports the same way only
// those below (802 packages, 7 minutes cold on 2 loaded cores, 2.3 minutes of CPU). The order plugins run in does
// not come from these imports but from CoreDNS's dnsserver.Directives (core/dnsserver/zdirectives.go), which stays
// as upstream has it. There is deliberately no forward plugin: names outside the cluster get no answer, and no
// query leaves the node's network namespace.
//
// It is a module of its own and shares no compiled package with the Kubernetes builds: CoreDNS 1.15.0 requires
// newer protobuf, oauth2, x/time and yaml than Kubernetes 1.37.2, so client-go compiles against other versions
// either way, and in the wrapper module it would move kube-apiserver's dependencies.
package main

import (
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"

	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
