package auth

import (
	"errors"
	"strings"
	"testing"
)

func TestTokenFromRequest(t *testing.T) {
	const tok = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
	tests := []struct {
		name, query, header string
		want                string
		wantErr             bool
	}{
		{name: "none"},
		{name: "query", query: "token=" + tok, want: tok},
		{name: "query among others", query: "a=1&token=" + tok + "&b=2", want: tok},
		{name: "query url-encoded", query: "token=a%2Bb%2Fc%3D", want: "a+b/c="},
		{name: "query plus is space", query: "token=a+b", wantErr: true},
		{name: "query encoded key", query: "%74oken=" + tok, want: tok},
		{name: "query empty value", query: "token=", want: ""},
		{name: "query bad escape", query: "token=%zz", wantErr: true},
		{name: "other param bad escape ignored", query: "x=%zz&token=" + tok, want: tok},
		{name: "query repeated same", query: "token=" + tok + "&token=" + tok, want: tok},
		{name: "query repeated different", query: "token=a&token=b", wantErr: true},
		{name: "query control char", query: "token=a%00b", wantErr: true},
		{name: "tokens prefix is not token", query: "tokens=" + tok, want: ""},
		{name: "header", header: "Bearer " + tok, want: tok},
		{name: "header lower-case scheme", header: "bearer " + tok, want: tok},
		{name: "header upper-case scheme", header: "BEARER " + tok, want: tok},
		{name: "header extra spaces", header: "  Bearer   " + tok + " ", want: tok},
		{name: "header basic", header: "Basic dXNlcjpwYXNz", wantErr: true},
		{name: "header bearer only", header: "Bearer", wantErr: true},
		{name: "header bearer blank", header: "Bearer   ", wantErr: true},
		{name: "header inner space", header: "Bearer a b", wantErr: true},
		{name: "header no space", header: "Bearer" + tok, wantErr: true},
		{name: "both equal", query: "token=" + tok, header: "Bearer " + tok, want: tok},
		{name: "both different", query: "token=" + tok, header: "Bearer other", wantErr: true},
		{name: "empty query, header", query: "token=", header: "Bearer " + tok, want: tok},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := TokenFromRequest(tc.query, tc.header)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidToken) {
					t.Fatalf("TokenFromRequest(%q, %q) = %q, %v; want ErrInvalidToken", tc.query, tc.header, got, err)
				}
				if got != "" {
					t.Errorf("token %q returned with an error", got)
				}
				if strings.Contains(err.Error(), tok) || strings.Contains(err.Error(), "other") {
					t.Errorf("error leaks the token: %v", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("TokenFromRequest(%q, %q) = %q, %v; want %q", tc.query, tc.header, got, err, tc.want)
			}
		})
	}
}
