//go:build !linux

package server_test

import "net"

// confBarrierSupported is false off Linux: splits are still written as
// separate writes, but nothing proves that the server read them apart.
const confBarrierSupported = false

func confUnread(local, remote *net.TCPAddr) (uint32, bool, error) { return 0, false, nil }
