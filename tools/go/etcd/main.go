// Command etcd is etcd's own server main, built from go.etcd.io/etcd/server/v3 at the
// version kube-apiserver's client is pinned to, for the real API server test tier.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
