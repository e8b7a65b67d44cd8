// Command etcd is etcd's own main, built from the version Kubernetes pins so tests run the etcd it expects.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
