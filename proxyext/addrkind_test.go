package proxyext

import "github.com/socksbind/socksbind"

// An addrKind is how a request carried its address: an IPv4 address, a
// domain name or an IPv6 address.
type addrKind string

const (
	kindIPv4   addrKind = "IPv4"
	kindDomain addrKind = "domain name"
	kindIPv6   addrKind = "IPv6"
)

func kindOf(a socksbind.Addr) addrKind {
	switch {
	case a.Name != "":
		return kindDomain
	case a.IP.Is4():
		return kindIPv4
	}
	return kindIPv6
}
