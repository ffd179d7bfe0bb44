//go:build !linux

// Command sourcebench needs Linux network namespaces; see main.go.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "sourcebench: Linux only (network namespaces, sock_diag)")
	os.Exit(1)
}
