package server

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/panjf2000/gnet/v2/pkg/socket"
	"golang.org/x/sys/unix"
)

// ErrAddrInUse is returned by Start when something already listens on
// the address.
var ErrAddrInUse = errors.New("server: address already in use")

// The engine listens with SO_REUSEPORT: each event loop has its own
// listening socket on the address and accepts the connections the kernel
// hashes to it, so a connection is accepted, registered and served by
// one thread. Without it gnet runs one more thread that accepts every
// connection and hands it to a loop through the loop's eventfd: one
// more thread wake-up per connect, which measured 13 % of the CPU of a
// connect and subscribe (docs/BENCHMARKS.md).
//
// SO_REUSEPORT also lets a second process of the same user bind the same
// address and silently take a share of the connections. reservePort
// keeps the guarantee a plain listener gives: before the engine binds,
// it binds the address without SO_REUSEPORT (which fails, as a plain
// listener would, if any socket listens there, with or without the
// option), then lets it go. Two gateways started within the same few
// microseconds on one port can still both bind; one started while
// another runs fails with ErrAddrInUse.
//
// Port 0 is resolved here, since each loop's listener binds on its own
// and would otherwise get a port of its own: a placeholder socket with
// SO_REUSEPORT is bound to port 0 and kept, not listening, until the
// engine's listeners have joined its port. bind(2) to port 0 does not
// hand out a port held by a SO_REUSEPORT socket, so nothing else takes
// it meanwhile.

// reservePort returns the address with a concrete port for the engine,
// and release, which the caller calls once the engine has bound (or
// failed to). Called once, by Start.
func reservePort(addr string) (concrete string, release func(), err error) {
	sa, family, tcpAddr, v6only, err := socket.GetTCPSockAddr("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	placeholder := tcpAddr.Port == 0
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return "", nil, fmt.Errorf("socket: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = unix.Close(fd)
		}
	}()
	if v6only {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return "", nil, fmt.Errorf("IPV6_V6ONLY: %w", err)
		}
	}
	// SO_REUSEADDR as the engine's listeners set it: TIME_WAIT sockets
	// of a previous run do not make the port look taken.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return "", nil, fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	if placeholder {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return "", nil, fmt.Errorf("SO_REUSEPORT: %w", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return "", nil, ErrAddrInUse
		}
		return "", nil, fmt.Errorf("bind: %w", err)
	}
	if !placeholder {
		return addr, func() {}, nil // the deferred close lets it go
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		return "", nil, fmt.Errorf("getsockname: %w", err)
	}
	port := 0
	switch a := bound.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, err
	}
	ok = true
	return net.JoinHostPort(host, strconv.Itoa(port)), func() { _ = unix.Close(fd) }, nil
}
