package config

import (
	"sort"
	"strconv"
	"strings"
)

// This file lists what HAProxy knows, so that a keyword sluice does not
// implement yet is a warning and a word HAProxy does not know either is an
// error with a suggestion. The tables follow configuration.txt of HAProxy 2.6
// to 2.8: 4.1 "Proxy keywords matrix", 3 "Global parameters", 5.1 "Bind
// options" and 5.2 "Server and default-server options".

// caps says in which proxy sections a keyword may appear. A listen section
// accepts every keyword that a frontend or a backend accepts.
type caps uint8

const (
	inDefaults caps = 1 << iota
	inFrontend
	inBackend
	namedDefaultsOnly // "(!)" in the matrix: only in a named defaults section
)

func (c caps) allows(k secKind) bool {
	switch k {
	case secDefaults:
		return c&inDefaults != 0
	case secFrontend:
		return c&inFrontend != 0
	case secBackend:
		return c&inBackend != 0
	case secListen:
		return c&(inFrontend|inBackend) != 0
	}
	return false
}

// where lists the sections a keyword is allowed in, for error messages.
func (c caps) where() string {
	var s []string
	if c&inDefaults != 0 {
		if c&namedDefaultsOnly != 0 {
			s = append(s, "named defaults")
		} else {
			s = append(s, "defaults")
		}
	}
	if c&inFrontend != 0 {
		s = append(s, "frontend")
	}
	if c&(inFrontend|inBackend) != 0 {
		s = append(s, "listen")
	}
	if c&inBackend != 0 {
		s = append(s, "backend")
	}
	return strings.Join(s, ", ")
}

// parseCaps reads "D", "D!", "F" and "B" tokens.
func parseCaps(toks []string) (c caps, rest []string) {
	for len(toks) > 0 {
		switch toks[len(toks)-1] {
		case "D":
			c |= inDefaults
		case "D!":
			c |= inDefaults | namedDefaultsOnly
		case "F":
			c |= inFrontend
		case "B":
			c |= inBackend
		default:
			return c, toks
		}
		toks = toks[:len(toks)-1]
	}
	return c, toks
}

// proxyKeywordTable is the proxy keywords matrix. A keyword followed by a
// second word (e.g. "stats uri") has sub-keywords; only the first two words
// are checked.
const proxyKeywordTable = `
acl                          D! F B
backlog                      D F
balance                      D B
bind                         F
capture cookie               F
capture request              F
capture response             F
clitcpka-cnt                 D F
clitcpka-idle                D F
clitcpka-intvl               D F
compression                  D F B
cookie                       D B
declare capture              F
default-server               D B
default_backend              D F
description                  F B
disabled                     D F B
dispatch                     B
email-alert from             D F B
email-alert level            D F B
email-alert mailers          D F B
email-alert myhostname       D F B
email-alert to               D F B
enabled                      D F B
errorfile                    D F B
errorfiles                   D F B
errorloc                     D F B
errorloc302                  D F B
errorloc303                  D F B
error-log-format             D F
external-check command       D B
external-check path          D B
force-persist                B
filter                       F B
fullconn                     D B
hash-balance-factor          D B
hash-type                    D B
http-after-response          D! F B
http-check comment           D B
http-check connect           D B
http-check disable-on-404    D B
http-check expect            D B
http-check send              D B
http-check send-state        D B
http-check set-var           D B
http-check unset-var         D B
http-error                   D F B
http-request                 D! F B
http-response                D! F B
http-reuse                   D B
http-send-name-header        D B
id                           F B
ignore-persist               B
load-server-state-from-file  D B
log                          D F B
log-format                   D F
log-format-sd                D F
log-tag                      D F B
max-keep-alive-queue         D B
maxconn                      D F
mode                         D F B
monitor fail                 F
monitor-uri                  D F
option                       D F B
persist rdp-cookie           D B
rate-limit sessions          D F
redirect                     F B
retries                      D B
retry-on                     D B
server                       B
server-state-file-name       D B
server-template              B
source                       D B
srvtcpka-cnt                 D B
srvtcpka-idle                D B
srvtcpka-intvl               D B
stats admin                  F B
stats auth                   D F B
stats enable                 D F B
stats hide-version           D F B
stats http-request           F B
stats realm                  D F B
stats refresh                D F B
stats scope                  D F B
stats show-desc              D F B
stats show-legends           D F B
stats show-modules           D F B
stats show-node              D F B
stats uri                    D F B
stick match                  B
stick on                     B
stick store-request          B
stick store-response         B
stick-table                  F B
tcp-check comment            D B
tcp-check connect            D B
tcp-check expect             D B
tcp-check send               D B
tcp-check send-lf            D B
tcp-check send-binary        D B
tcp-check send-binary-lf     D B
tcp-check set-var            D B
tcp-check unset-var          D B
tcp-request connection       D! F
tcp-request content          D! F B
tcp-request inspect-delay    D! F B
tcp-request session          D! F
tcp-response content         D! B
tcp-response inspect-delay   D! B
timeout                      D F B
transparent                  D B
unique-id-format             D F
unique-id-header             D F
use_backend                  F
use-fcgi-app                 B
use-server                   B
`

// sluiceOptionTable lists sluice's own options (HAProxy has none of these
// names): the kernel features, each on by default where the kernel supports
// it and switched off with `no option`.
const sluiceOptionTable = `
kernel-counters              * D F B
kernel-splice                * D F B
kernel-steer                 * D F
`

// optionTable lists `option` names; "*" marks the ones HAProxy lets you
// negate with "no option" or reset with "default option".
const optionTable = `
abortonclose                 * D B
accept-invalid-http-request  * D F
accept-invalid-http-response * D B
allbackups                   * D B
checkcache                   * D B
clitcpka                     * D F
contstats                    * D F
disable-h2-upgrade           * D F
dontlog-normal               * D F
dontlognull                  * D F
external-check                 D B
forwardfor                     D F B
forwarded                    * D B
h1-case-adjust-bogus-client  * D F
h1-case-adjust-bogus-server  * D B
http-buffer-request          * D F B
http-ignore-probes           * D F
http-keep-alive              * D F B
http-no-delay                * D F B
http-pretend-keepalive       * D B
http-restrict-req-hdr-names    D F B
http-server-close            * D F B
http-use-proxy-header        * D F
httpchk                        D B
httpclose                    * D F B
httplog                        D F
httpslog                       D F
idle-close-on-response       * D F
independent-streams          * D F B
ldap-check                     D B
log-health-checks            * D B
log-separate-errors          * D F
logasap                      * D F
mysql-check                    D B
nolinger                     * D F B
originalto                     D F B
persist                      * D B
pgsql-check                    D B
prefer-last-server           * D B
redis-check                    D B
redispatch                   * D B
smtpchk                        D B
socket-stats                 * D F
splice-auto                  * D F B
splice-request               * D F B
splice-response              * D F B
spop-check                     D B
srvtcpka                     * D B
ssl-hello-chk                  D B
tcp-check                      D B
tcp-smart-accept             * D F
tcp-smart-connect            * D B
tcpka                          D F B
tcplog                         D F B
transparent                  * D B
`

// timeoutTable lists `timeout` names.
const timeoutTable = `
check            D B
client           D F
client-fin       D F
connect          D B
http-keep-alive  D F B
http-request     D F B
queue            D B
server           D B
server-fin       D B
tarpit           D F B
tunnel           D B
`

// bindParamTable lists `bind` parameters with the number of values each
// takes.
const bindParamTable = `
accept-netscaler-cip 1
accept-proxy 0
allow-0rtt 0
alpn 1
backlog 1
ca-file 1
ca-ignore-err 1
ca-sign-file 1
ca-sign-pass 1
ca-verify-file 1
ciphers 1
ciphersuites 1
client-sigalgs 1
crl-file 1
crt 1
crt-ignore-err 1
crt-list 1
curves 1
defer-accept 0
ecdhe 1
expose-fd 1
force-sslv3 0
force-tlsv10 0
force-tlsv11 0
force-tlsv12 0
force-tlsv13 0
generate-certificates 0
gid 1
group 1
id 1
interface 1
level 1
maxconn 1
mode 1
mss 1
name 1
namespace 1
nbconn 1
nice 1
no-alpn 0
no-ca-names 0
no-sslv3 0
no-tls-tickets 0
no-tlsv10 0
no-tlsv11 0
no-tlsv12 0
no-tlsv13 0
npn 1
ocsp-update 1
prefer-client-ciphers 0
process 1
proto 1
quic-cc-algo 1
quic-force-retry 0
quic-socket 1
severity-output 1
shards 1
sigalgs 1
ssl 0
ssl-max-ver 1
ssl-min-ver 1
strict-sni 0
tcp-ut 1
tfo 0
thread 1
tls-ticket-keys 1
transparent 0
uid 1
user 1
v4v6 0
v6only 0
verify 1
`

// serverParamTable lists `server` and `default-server` parameters with the
// number of values each takes. "source" is special (address then optional
// usesrc/interface pairs) and handled by the parser.
const serverParamTable = `
addr 1
agent-addr 1
agent-check 0
agent-inter 1
agent-port 1
agent-send 1
allow-0rtt 0
alpn 1
backup 0
ca-file 1
check 0
check-alpn 1
check-proto 1
check-send-proxy 0
check-sni 1
check-ssl 0
check-via-socks4 0
ciphers 1
ciphersuites 1
client-sigalgs 1
cookie 1
crl-file 1
crt 1
curves 1
disabled 0
downinter 1
enabled 0
error-limit 1
fall 1
fastinter 1
force-sslv3 0
force-tlsv10 0
force-tlsv11 0
force-tlsv12 0
force-tlsv13 0
hash-key 1
id 1
init-addr 1
inter 1
log-bufsize 1
log-proto 1
max-reuse 1
maxconn 1
maxqueue 1
minconn 1
namespace 1
no-agent-check 0
no-backup 0
no-check 0
no-check-ssl 0
no-send-proxy 0
no-send-proxy-v2 0
no-send-proxy-v2-ssl 0
no-send-proxy-v2-ssl-cn 0
no-ssl 0
no-ssl-reuse 0
no-sslv3 0
no-tfo 0
no-tls-tickets 0
no-tlsv10 0
no-tlsv11 0
no-tlsv12 0
no-tlsv13 0
no-verifyhost 0
non-stick 0
npn 1
observe 1
on-error 1
on-marked-down 1
on-marked-up 1
pool-low-conn 1
pool-max-conn 1
pool-purge-delay 1
port 1
proto 1
proxy-v2-options 1
redir 1
resolve-net 1
resolve-opts 1
resolve-prefer 1
resolvers 1
rise 1
send-proxy 0
send-proxy-v2 0
send-proxy-v2-ssl 0
send-proxy-v2-ssl-cn 0
shard 1
sigalgs 1
slowstart 1
sni 1
socks4 1
source 1
ssl 0
ssl-max-ver 1
ssl-min-ver 1
ssl-reuse 0
stick 0
tcp-ut 1
tfo 0
tls-tickets 0
track 1
verify 1
verifyhost 1
weight 1
ws 1
`

// globalKeywordTable lists the global section's keywords.
const globalKeywordTable = `
51degrees-allow-unmatched 51degrees-cache-size 51degrees-data-file
51degrees-difference 51degrees-drift 51degrees-property-name-list
51degrees-property-separator 51degrees-use-performance-graph
51degrees-use-predictive-graph anonkey busy-polling ca-base chroot
close-spread-time cluster-secret cpu-map crt-base daemon debug default-path
description deviceatlas-json-file deviceatlas-log-level
deviceatlas-properties-cookie deviceatlas-separator
expose-experimental-directives external-check fd-hard-limit gid grace group
h1-accept-payload-with-any-method h1-case-adjust h1-case-adjust-file
h2-workaround-bogus-websocket-clients hard-stop-after
httpclient.resolvers.disabled httpclient.resolvers.id
httpclient.resolvers.prefer httpclient.retries httpclient.ssl.ca-file
httpclient.ssl.verify httpclient.timeout.connect insecure-fork-wanted
insecure-setuid-wanted issuers-chain-path localpeer log log-send-hostname
log-tag lua-load lua-load-per-thread lua-prepend-path master-worker
max-spread-checks maxcompcpuusage maxcomprate maxconn maxconnrate maxpipes
maxsessrate maxsslconn maxsslrate maxzlibmem mworker-max-reloads nbthread
no-memory-trimming node noepoll noevports nogetaddrinfo nokqueue nopoll
noreuseport nosplice numa-cpu-mapping pidfile pp2-never-send-local
prealloc-fd presetenv profiling.memory profiling.tasks quiet resetenv
server-state-base server-state-file set-dumpable set-var set-var-fmt setenv
spread-checks ssl-default-bind-ciphers ssl-default-bind-ciphersuites
ssl-default-bind-client-sigalgs ssl-default-bind-curves
ssl-default-bind-options ssl-default-bind-sigalgs ssl-default-server-ciphers
ssl-default-server-ciphersuites ssl-default-server-client-sigalgs
ssl-default-server-curves ssl-default-server-options
ssl-default-server-sigalgs ssl-dh-param-file ssl-engine
ssl-load-extra-del-ext ssl-load-extra-files ssl-mode-async ssl-propquery
ssl-provider ssl-provider-path ssl-security-level ssl-server-verify
ssl-skip-self-issued-ca stats strict-limits thread-group thread-groups
tune.buffers.limit tune.buffers.reserve tune.bufsize tune.comp.maxlevel
tune.disable-fast-forward tune.disable-zero-copy-forwarding tune.fail-alloc
tune.fd.edge-triggered tune.h2.be.initial-window-size
tune.h2.be.max-concurrent-streams tune.h2.fe.initial-window-size
tune.h2.fe.max-concurrent-streams tune.h2.header-table-size
tune.h2.initial-window-size tune.h2.max-concurrent-streams
tune.h2.max-frame-size tune.http.cookielen tune.http.logurilen
tune.http.maxhdr tune.idle-pool.shared tune.idletimer tune.lua.forced-yield
tune.lua.maxmem tune.lua.service-timeout tune.lua.session-timeout
tune.lua.task-timeout tune.maxaccept tune.maxpollevents tune.maxrewrite
tune.memory.hot-size tune.pattern.cache-size tune.peers.max-updates-at-once
tune.pipesize tune.pool-high-fd-ratio tune.pool-low-fd-ratio
tune.quic.frontend.conn-tx-buffers.limit tune.quic.frontend.max-idle-timeout
tune.quic.frontend.max-streams-bidi tune.quic.max-frame-loss
tune.quic.retry-threshold tune.quic.socket-owner tune.rcvbuf.client
tune.rcvbuf.server tune.recv_enough tune.runqueue-depth
tune.sched.low-latency tune.sndbuf.client tune.sndbuf.server
tune.ssl.cachesize tune.ssl.capture-buffer-size
tune.ssl.capture-cipherlist-size tune.ssl.default-dh-param
tune.ssl.force-private-cache tune.ssl.hard-maxrecord tune.ssl.keylog
tune.ssl.lifetime tune.ssl.maxrecord tune.ssl.ocsp-update.maxdelay
tune.ssl.ocsp-update.mindelay tune.ssl.ssl-ctx-cache-size
tune.stick-counters tune.vars.global-max-size tune.vars.proc-max-size
tune.vars.reqres-max-size tune.vars.sess-max-size tune.vars.txn-max-size
tune.zlib.memlevel tune.zlib.windowsize uid ulimit-n unix-bind unsetenv user
wurfl-cache-size wurfl-data-file wurfl-information-list
wurfl-information-list-separator zero-warning
`

// globalKeywordPrefixes are families whose members are accepted with a
// warning even when they are not in the list above (HAProxy adds tune.*
// settings often).
var globalKeywordPrefixes = []string{"tune.", "ssl-default-", "httpclient.", "51degrees-", "wurfl-", "deviceatlas-"}

// ignoredSections are HAProxy sections sluice does not implement; their
// content is skipped with one warning.
var ignoredSections = map[string]bool{
	"cache": true, "crt-store": true, "fcgi-app": true, "http-errors": true,
	"log-forward": true, "mailers": true, "peers": true, "program": true,
	"resolvers": true, "ring": true, "userlist": true,
}

// removedKeywords are keywords older HAProxy versions had and HAProxy 2.6
// rejects; the message says what replaced them.
var removedKeywords = map[string]string{
	"block":       "'block' was removed in HAProxy 2.1; use 'http-request deny' instead",
	"redispatch":  "'redispatch' was removed in HAProxy 2.1; use 'option redispatch' instead",
	"contimeout":  "'contimeout' was removed in HAProxy 2.1; use 'timeout connect' instead",
	"clitimeout":  "'clitimeout' was removed in HAProxy 2.1; use 'timeout client' instead",
	"srvtimeout":  "'srvtimeout' was removed in HAProxy 2.1; use 'timeout server' instead",
	"monitor-net": "'monitor-net' was removed in HAProxy 2.4; use 'http-request return status 200 if { src NET }' instead",
	"bind-process": "'bind-process' was removed in HAProxy 2.5 (there is only one process); " +
		"remove it, or use 'thread' on 'bind' lines",
	"nbproc": "'nbproc' was removed in HAProxy 2.5; threads are used instead (see 'nbthread')",
}

func init() {
	for _, k := range []string{"reqadd", "reqallow", "reqdel", "reqdeny", "reqiallow", "reqidel", "reqideny",
		"reqipass", "reqirep", "reqisetbe", "reqitarpit", "reqpass", "reqrep", "reqsetbe", "reqtarpit"} {
		removedKeywords[k] = "'" + k + "' was removed in HAProxy 2.1; use 'http-request' rules instead"
	}
	for _, k := range []string{"rspadd", "rspdel", "rspdeny", "rspidel", "rspideny", "rspirep", "rsprep"} {
		removedKeywords[k] = "'" + k + "' was removed in HAProxy 2.1; use 'http-response' rules instead"
	}
}

// kwInfo describes a proxy keyword (or a keyword family with sub-keywords).
type kwInfo struct {
	caps caps
	subs map[string]caps // second words for families like "stats" or "tcp-request"
}

type optInfo struct {
	caps      caps
	negatable bool
}

var (
	proxyKeywords  = map[string]*kwInfo{}
	options        = map[string]optInfo{}
	timeouts       = map[string]caps{}
	bindParams     = map[string]int{}
	serverParams   = map[string]int{}
	globalKeywords = map[string]bool{}
)

func tableLines(table string) [][]string {
	var out [][]string
	for _, l := range strings.Split(table, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			out = append(out, f)
		}
	}
	return out
}

func init() {
	for _, f := range tableLines(proxyKeywordTable) {
		c, words := parseCaps(f)
		kw := proxyKeywords[words[0]]
		if kw == nil {
			kw = &kwInfo{}
			proxyKeywords[words[0]] = kw
		}
		if len(words) > 1 {
			if kw.subs == nil {
				kw.subs = map[string]caps{}
			}
			kw.subs[words[1]] = c
			c &^= namedDefaultsOnly // the family's caps are the union, for suggestions
		}
		kw.caps |= c
	}
	for _, f := range tableLines(optionTable + sluiceOptionTable) {
		c, words := parseCaps(f)
		options[words[0]] = optInfo{caps: c, negatable: len(words) > 1 && words[1] == "*"}
	}
	for _, f := range tableLines(timeoutTable) {
		c, words := parseCaps(f)
		timeouts[words[0]] = c
	}
	for _, f := range tableLines(bindParamTable) {
		n, _ := strconv.Atoi(f[1])
		bindParams[f[0]] = n
	}
	for _, f := range tableLines(serverParamTable) {
		n, _ := strconv.Atoi(f[1])
		serverParams[f[0]] = n
	}
	for _, f := range tableLines(globalKeywordTable) {
		for _, k := range f {
			globalKeywords[k] = true
		}
	}
}

// sectionKeywords start a section and are valid everywhere.
var sectionKeywords = []string{"global", "defaults", "frontend", "backend", "listen"}

// proxyCandidates lists the first words valid in a section of kind k, for
// suggestions.
func proxyCandidates(k secKind) []string {
	c := append([]string{"no", "default"}, sectionKeywords...)
	for name, kw := range proxyKeywords {
		if kw.caps.allows(k) {
			c = append(c, name)
		}
	}
	for name := range ignoredSections {
		c = append(c, name)
	}
	return c
}

func optionCandidates(k secKind) []string {
	var c []string
	for name, o := range options {
		if o.caps.allows(k) {
			c = append(c, name)
		}
	}
	return c
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
