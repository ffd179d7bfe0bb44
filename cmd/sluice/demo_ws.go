package main

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/coder/websocket"
)

// demoWSHandler serves the demo's WebSocket backend: /websockets/echo echoes
// every message back (text or binary, any size up to 16 MiB), and
// /websockets/ is a small page that talks to it from a browser. Everything
// else goes to next.
func demoWSHandler(name string, next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", next)
	mux.HandleFunc("/websockets/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", name)
		if r.Header.Get("Upgrade") == "" {
			fmt.Fprintf(w, "%s: a WebSocket echo endpoint; connect with a WebSocket client (see /websockets/)\n", name)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return // Accept has answered the client
		}
		defer c.CloseNow()
		c.SetReadLimit(16 << 20)
		ctx := context.Background()
		for {
			typ, rd, err := c.Reader(ctx)
			if err != nil {
				return // closed (the close handshake is answered by the library)
			}
			wr, err := c.Writer(ctx, typ)
			if err != nil {
				return
			}
			if _, err := io.Copy(wr, rd); err != nil {
				return
			}
			if err := wr.Close(); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/websockets/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", name)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, demoWSPage)
	})
	return mux
}

// demoWSPage opens a WebSocket through the balancer and shows the echoes.
const demoWSPage = `<!doctype html>
<meta charset="utf-8"><title>sluice demo: WebSocket echo</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}#log{white-space:pre;font-family:monospace;background:#f4f4f4;padding:1em;min-height:8em}</style>
<h1>WebSocket echo through sluice</h1>
<p>The page connects to <code>/websockets/echo</code>; sluice routes it by ACL to the <code>ws</code> backend and,
after the server's 101, carries the connection as a tunnel (idle limit: <code>timeout tunnel</code>).</p>
<form id="f"><input id="m" size="40" value="hello" autofocus> <button>send</button></form>
<div id="log"></div>
<script>
const log = s => document.getElementById('log').textContent += s + '\n';
const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/websockets/echo');
ws.onopen = () => log('open');
ws.onmessage = e => log('echo: ' + e.data);
ws.onclose = e => log('closed (' + e.code + ')');
document.getElementById('f').onsubmit = e => { e.preventDefault(); ws.send(document.getElementById('m').value); };
</script>
`
