//go:build linux

package server_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"
)

// confBarrierSupported says whether confUnread works on this system.
const confBarrierSupported = true

// confUnread returns how many bytes the kernel holds unread in the receive
// queue of the TCP socket local→remote (as seen from that socket), and
// whether such a socket exists. It asks sock_diag (NETLINK_INET_DIAG) for
// exactly that socket: /proc/net/tcp would do, but it lists every socket
// of the host, thousands of TIME_WAITs after a few tests, and costs tens
// of milliseconds per read.
func confUnread(local, remote *net.TCPAddr) (n uint32, found bool, err error) {
	lip, rip := local.IP.To4(), remote.IP.To4()
	if lip == nil || rip == nil {
		return 0, false, fmt.Errorf("confUnread: IPv4 only: %v → %v", local, remote)
	}
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.NETLINK_INET_DIAG)
	if err != nil {
		return 0, false, fmt.Errorf("confUnread: netlink socket: %w", err)
	}
	defer syscall.Close(fd)

	// struct nlmsghdr (16 bytes) + struct inet_diag_req_v2 (56 bytes).
	const sockDiagByFamily = 20
	req := make([]byte, 16+56)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], syscall.NLM_F_REQUEST)
	ne.PutUint32(req[8:], 1) // sequence number
	b := req[16:]
	b[0], b[1] = syscall.AF_INET, syscall.IPPROTO_TCP
	ne.PutUint32(b[4:], ^uint32(0)) // every TCP state
	// struct inet_diag_sockid: ports and addresses in network order.
	id := b[8:]
	binary.BigEndian.PutUint16(id[0:], uint16(local.Port))
	binary.BigEndian.PutUint16(id[2:], uint16(remote.Port))
	copy(id[4:8], lip)
	copy(id[20:24], rip)
	for i := 40; i < 48; i++ {
		id[i] = 0xff // INET_DIAG_NOCOOKIE: look the socket up by address
	}
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return 0, false, fmt.Errorf("confUnread: netlink send: %w", err)
	}
	buf := make([]byte, 4096)
	nr, _, err := syscall.Recvfrom(fd, buf, 0)
	if err != nil {
		return 0, false, fmt.Errorf("confUnread: netlink receive: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:nr])
	if err != nil {
		return 0, false, fmt.Errorf("confUnread: netlink parse: %w", err)
	}
	for _, m := range msgs {
		switch m.Header.Type {
		case syscall.NLMSG_ERROR:
			if len(m.Data) < 4 {
				return 0, false, errors.New("confUnread: short netlink error")
			}
			errno := -int32(ne.Uint32(m.Data))
			if syscall.Errno(errno) == syscall.ENOENT {
				return 0, false, nil // closed and gone
			}
			return 0, false, fmt.Errorf("confUnread: sock_diag: %w", syscall.Errno(errno))
		case sockDiagByFamily:
			// struct inet_diag_msg: 4 bytes, the 48-byte sockid, then
			// expires, rqueue (unread bytes for a connected socket).
			if len(m.Data) < 60 {
				return 0, false, errors.New("confUnread: short inet_diag_msg")
			}
			return ne.Uint32(m.Data[56:60]), true, nil
		}
	}
	return 0, false, errors.New("confUnread: no answer from sock_diag")
}
