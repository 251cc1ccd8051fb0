// Package integration tests socksbind against real proxy servers: Dante
// (danted, SOCKS5 with BIND and UDP ASSOCIATE), microsocks (SOCKS5, CONNECT
// only), tinyproxy (an HTTP CONNECT hop in front of a SOCKS server) and GOST
// v3 (gost, SOCKS5 with BIND and GOST's multiplexed BIND, MBIND). The FTP
// test (ftp_test.go) builds the example examples/ftpactive and runs it
// against pyftpdlib, an FTP server, through Dante; the expose tests
// (expose_test.go, expose_status_test.go) build cmd/expose and run it
// against Dante and GOST, with nginx behind it for the PROXY protocol; the
// expose benchmarks (expose_bench_test.go) compare it with GOST's own rtcp
// client. The MBIND server tests (mbind_server_linux_test.go,
// mbind_burst_linux_test.go) hold a multiplexed listener to what a kernel
// listener does: a burst of 3,000 peers, a peer that is never read, an Accept
// loop that pauses for 70 s, a GOST killed and restarted or stopped and
// resumed; they run in parallel.
// The UDP tests (udp_test.go) relay datagrams through Dante's and GOST's UDP
// ASSOCIATE and GOST's UDP-TUN (also through tinyproxy), to a UDP echo server
// and a DNS server that the tests start on loopback.
//
// The package holds tests only. Each test starts the servers it needs as child
// processes, in the foreground, on free ports on 127.0.0.1 (and ::1), with
// configurations rendered from testdata/ into a temporary directory; it waits
// until each port accepts connections (and, for the SOCKS servers, answers a
// greeting) and stops every server in the test's cleanup, printing the
// server's captured output when the test failed. The tests send traffic to
// loopback addresses only and use no system service. The harness is in
// harness_test.go; harness_selftest_test.go checks it with raw protocol bytes.
//
// A test binary killed from outside, or by the -timeout panic, runs no
// cleanup: servers it had started keep running on their loopback ports until
// they are killed.
//
// # Requirements
//
// The programs danted, microsocks, tinyproxy and gost must be in PATH (danted
// lives in /usr/sbin on Debian). On Debian or Ubuntu, as root,
//
//	bash .ci/install-deps
//
// installs them (packages dante-server, microsocks, tinyproxy, and
// python3-pyftpdlib for the FTP test, which runs it with Debian's
// /usr/bin/python3, or else the python3 of PATH; GOST from the
// copy in ../shared/tools/gost beside the repository, into /usr/local/bin),
// stops and disables the services the packages bring, and creates the system
// user socksbindtest with password socksbind-pass, against which Dante's
// username/password method checks. The script is safe to run again. GOST has
// no Debian package; without that copy, install it with
//
//	go install github.com/go-gost/gost/cmd/gost@latest
//
// and put $(go env GOPATH)/bin in PATH.
//
// Dante's username/password method reads /etc/shadow, so the tests that use it
// need to run as root; the other Dante tests also run as an ordinary user.
//
// # Running
//
//	go test ./integration/
//
// skips every test whose server is missing, with a message saying so. CI sets
//
//	SOCKSBIND_INTEGRATION=require go test -race ./integration/
//
// under which a missing server, a missing test user or a missing ::1 fails the
// test instead.
package integration
