package auth

import (
	"fmt"
	"net/url"
	"strings"
)

// TokenFromRequest extracts the client's token from an upgrade request: the
// "token" query parameter (URL-decoded) or an "Authorization: Bearer <token>"
// header (scheme case-insensitive). Browsers cannot set headers on WebSocket
// requests, hence the query parameter. It returns "" and no error when
// neither is present.
//
// Ambiguity is refused with ErrInvalidToken rather than resolved, so that a
// credential is never silently ignored: both sources present with different
// values, repeated "token" parameters that differ, a non-Bearer
// Authorization header, an undecodable parameter, or a token containing
// whitespace or control characters. Errors never contain the token.
func TokenFromRequest(rawQuery string, authorizationHeader string) (string, error) {
	fromQuery, err := tokenFromQuery(rawQuery)
	if err != nil {
		return "", err
	}
	fromHeader, err := tokenFromHeader(authorizationHeader)
	if err != nil {
		return "", err
	}
	switch {
	case fromQuery == "":
		return fromHeader, nil
	case fromHeader == "" || fromHeader == fromQuery:
		return fromQuery, nil
	}
	return "", fmt.Errorf("%w: query token and Authorization header differ", ErrInvalidToken)
}

// tokenFromQuery scans the query by hand instead of using url.ParseQuery,
// which fails the whole query for one malformed unrelated parameter and
// cannot say which one was bad.
func tokenFromQuery(rawQuery string) (string, error) {
	var token string
	for rest := rawQuery; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		key, value, _ := strings.Cut(pair, "=")
		k, err := url.QueryUnescape(key)
		if err != nil || k != "token" {
			continue // other parameters are not ours to judge
		}
		v, err := url.QueryUnescape(value)
		if err != nil {
			return "", fmt.Errorf("%w: token parameter is not valid URL encoding", ErrInvalidToken)
		}
		if v == "" {
			continue
		}
		if !validTokenBytes(v) {
			return "", fmt.Errorf("%w: token parameter contains whitespace or control characters", ErrInvalidToken)
		}
		if token != "" && token != v {
			return "", fmt.Errorf("%w: conflicting token parameters", ErrInvalidToken)
		}
		token = v
	}
	return token, nil
}

func tokenFromHeader(h string) (string, error) {
	h = strings.Trim(h, " \t")
	if h == "" {
		return "", nil
	}
	scheme, rest, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: Authorization scheme is not Bearer", ErrInvalidToken)
	}
	token := strings.TrimLeft(rest, " ")
	if token == "" {
		return "", fmt.Errorf("%w: empty Bearer token", ErrInvalidToken)
	}
	if !validTokenBytes(token) {
		return "", fmt.Errorf("%w: Bearer token contains whitespace or control characters", ErrInvalidToken)
	}
	return token, nil
}

// validTokenBytes refuses spaces and control bytes: no API key or JWT has
// them, and they are a sign of a mangled or injected header.
func validTokenBytes(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}
