package socks5test

// NoReuseAddr is the net.ListenConfig.Control of a BIND socket, for the
// tests that hold a port as the server would.
var NoReuseAddr = noReuseAddr
