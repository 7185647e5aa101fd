package wsproto

import (
	"fmt"

	"github.com/gobwas/ws"
)

// CloseReason is a typed reason for closing a connection, with the
// WebSocket status code it is sent with (RFC 6455 §7.4.1).
type CloseReason struct {
	Code ws.StatusCode
	Text string
}

func (r CloseReason) Error() string { return fmt.Sprintf("wsproto: close %d: %s", r.Code, r.Text) }

// Close reasons used by the gateway. Their texts are sent to the client in
// the close frame, so they never carry client input.
var (
	CloseNormal        = CloseReason{ws.StatusNormalClosure, "normal closure"}
	CloseGoingAway     = CloseReason{ws.StatusGoingAway, "server shutting down"}
	CloseProtocol      = CloseReason{ws.StatusProtocolError, "protocol error"}
	CloseUnmasked      = CloseReason{ws.StatusProtocolError, "client frames must be masked"}
	CloseReservedBits  = CloseReason{ws.StatusProtocolError, "reserved bits set without an extension"}
	CloseBadOpcode     = CloseReason{ws.StatusProtocolError, "reserved opcode"}
	CloseBadControl    = CloseReason{ws.StatusProtocolError, "control frame fragmented or over 125 bytes"}
	CloseBadContinue   = CloseReason{ws.StatusProtocolError, "unexpected continuation frame"}
	CloseBadFragment   = CloseReason{ws.StatusProtocolError, "new data frame inside a fragmented message"}
	CloseBadCloseCode  = CloseReason{ws.StatusProtocolError, "invalid close code"}
	CloseBadLength     = CloseReason{ws.StatusProtocolError, "invalid payload length"}
	CloseBadUTF8       = CloseReason{ws.StatusInvalidFramePayloadData, "invalid UTF-8 in text"}
	CloseBinary        = CloseReason{ws.StatusUnsupportedData, "binary messages are not supported"}
	ClosePolicy        = CloseReason{ws.StatusPolicyViolation, "policy violation"}
	CloseRateLimited   = CloseReason{ws.StatusPolicyViolation, "rate limit exceeded repeatedly"}
	CloseTokenExpired  = CloseReason{ws.StatusPolicyViolation, "token expired"}
	CloseTooBig        = CloseReason{ws.StatusMessageTooBig, "message too big"}
	CloseSlowConsumer  = CloseReason{StatusTryAgainLater, "too slow: messages dropped"}
	CloseIdle          = CloseReason{ws.StatusGoingAway, "no traffic within ping timeout"}
	CloseInternalError = CloseReason{ws.StatusInternalServerError, "internal error"}

	// ClosePartialTimeout: a message was not completed within the
	// server's time limit (its fragments or a frame trickled in).
	ClosePartialTimeout = CloseReason{ws.StatusPolicyViolation, "message not completed in time"}
	// ClosePartialFull: the server holds as many bytes of unfinished
	// messages, across all connections, as it allows.
	ClosePartialFull = CloseReason{ws.StatusMessageTooBig, "too many unfinished messages on the server"}
)

// ValidCloseCode reports whether code may appear in a close frame received
// from a peer (RFC 6455 §7.4.1, §7.4.2 and the IANA registry): 1000-1003,
// 1007-1014 and 3000-4999. 1004, 1005, 1006 and 1015 must never be sent.
func ValidCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// StatusTryAgainLater is 1013 (IANA registry; not in gobwas/ws).
const StatusTryAgainLater ws.StatusCode = 1013
