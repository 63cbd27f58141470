// Command etcd is the upstream etcd server, built from the version pinned in
// ../../go.mod so that it shares one module graph with kube-apiserver.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
