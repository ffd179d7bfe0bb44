// Package route compiles HAProxy ACLs and conditions and picks the backend of
// an HTTP request (configuration.txt section 7 "Using ACLs and fetching
// samples", and the use_backend / default_backend keywords).
//
// It owns sample fetches (path, url, url_param, hdr, hdr_cnt, method, src,
// dst_port, req.ver and their ACL derivatives), pattern matching methods
// (-m str|beg|end|sub|dir|dom|reg|len|int|ip|found|bool), ACL flags (-i, -f,
// -m, -n, -u, --), integer operators and ranges, the predefined ACLs, and
// condition evaluation (implicit AND, || / or, !, anonymous { } ACLs,
// if / unless).
//
// Everything is compiled once from pkg/config's model; matching works on the
// byte slices of an h1.Request and allocates nothing: case-insensitive
// patterns are lowercased at compile time and the sample is folded while
// comparing. The package does no I/O at match time (patterns files are read
// at compile time), holds no per-request state, and must not know about
// listeners, connections or backends beyond the index the caller gives it.
package route
