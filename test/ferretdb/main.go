// Command ferretdb-test runs FerretDB v1 (SQLite backend) embedded, as the
// MongoDB wire-protocol server for agentauth's tests. Embedding it makes this
// the main module, which avoids the upstream version-file panic of a plain
// `go install`, and the embedded mode never sends telemetry.
//
// Embedded, FerretDB reports its version as "unknown" (it reads it from a
// generated file only in its own builds). This server sets the version of the
// FerretDB module it was built with instead, so that `buildInfo` answers with
// the `ferretdbVersion` a release of that version reports, and agentauth's
// start-up warning for FerretDB v1 (storage.ferretdb_v1) is tested against it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/FerretDB/FerretDB/build/version"
	"github.com/FerretDB/FerretDB/ferretdb"
)

// ferretdbModuleVersion is the version of the FerretDB module in this binary's build information (go.mod's).
func ferretdbModuleVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		log.Fatal("ferretdb-test: no build information in the binary")
	}
	for _, dep := range info.Deps {
		if dep.Path == "github.com/FerretDB/FerretDB" {
			return dep.Version
		}
	}
	log.Fatal("ferretdb-test: the FerretDB module is not in the build information")
	return ""
}

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on (keep it on loopback)")
	dir := flag.String("dir", "", "directory for the SQLite databases (required)")
	flag.Parse()

	if *dir == "" {
		fmt.Fprintln(os.Stderr, "ferretdb-test: -dir is required")
		os.Exit(2)
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		log.Fatalf("ferretdb-test: %v", err)
	}

	version.Get().Version = ferretdbModuleVersion()

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Handler:   "sqlite",
		SQLiteURL: "file:" + *dir + "/",
	})
	if err != nil {
		log.Fatalf("ferretdb-test: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Printf("ferretdb-test listening on %s (sqlite in %s)\n", *listen, *dir)
	f.Run(ctx)
}
