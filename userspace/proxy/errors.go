package proxy

import (
	"net/http"
	"strconv"
)

// errorPages are the responses sluice generates itself, in HAProxy's style:
// a tiny HTML body, no caching, and the connection closed.
var errorPages = func() map[int][]byte {
	msgs := map[int]string{
		400: "Your browser sent an invalid request.",
		408: "Your browser didn't send a complete request in time.",
		431: "Your browser sent a request with headers too large.",
		500: "An internal server error occurred.",
		501: "The request uses a feature this server does not implement.",
		502: "The server returned an invalid or incomplete response.",
		503: "No server is available to handle this request.",
		504: "The server didn't respond in time.",
		505: "The HTTP version of the request is not supported.",
	}
	for code := 400; code < 600; code++ {
		if _, ok := msgs[code]; !ok && http.StatusText(code) != "" {
			msgs[code] = "The request was refused (" + http.StatusText(code) + ")."
		}
	}
	msgs[403] = "Request forbidden by administrative rules."
	msgs[429] = "You have sent too many requests in a given amount of time."
	pages := map[int][]byte{}
	for code, msg := range msgs {
		text := strconv.Itoa(code) + " " + http.StatusText(code)
		body := "<html><body><h1>" + text + "</h1>\n" + msg + "\n</body></html>\n"
		pages[code] = []byte("HTTP/1.1 " + text + "\r\n" +
			"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
			"Cache-Control: no-cache\r\n" +
			"Content-Type: text/html\r\n" +
			"Connection: close\r\n\r\n" + body)
	}
	return pages
}()

func errorPage(status int) []byte {
	if p, ok := errorPages[status]; ok {
		return p
	}
	return errorPages[500]
}
