package route

import (
	"fmt"
	"strings"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/proxy/h1"
)

// Router picks the backend of a request for one frontend. It is immutable
// and safe for concurrent use.
type Router struct {
	acls  *ACLSet
	rules []rule
	def   int
}

type rule struct {
	cond    *Cond // nil = unconditional
	backend int
}

// Compile builds the router of one frontend from its acl, use_backend and
// default_backend lines. backendIndex resolves a backend name to the
// caller's index. Every error is collected; the error is a config.Errors.
func Compile(fe *config.Frontend, backendIndex func(name string) (int, bool)) (*Router, error) {
	set, errs := newACLSet(fe.ACLs)
	r := &Router{acls: set, def: -1}
	resolve := func(pos config.Pos, keyword, name string) (int, bool) {
		switch {
		case name == "":
			errs = append(errs, config.Diag{Pos: pos, Msg: keyword + ": missing backend name"})
		case strings.Contains(name, "%["):
			errs = append(errs, config.Diag{Pos: pos, Msg: fmt.Sprintf(
				"%s: dynamic backend name '%s' is not supported yet", keyword, name)})
		default:
			if i, ok := backendIndex(name); ok {
				return i, true
			}
			errs = append(errs, config.Diag{Pos: pos, Msg: fmt.Sprintf("%s: no such backend '%s'", keyword, name)})
		}
		return -1, false
	}
	for i := range fe.UseBackends {
		ub := &fe.UseBackends[i]
		idx, _ := resolve(ub.Pos, "use_backend", ub.Backend)
		var c *Cond
		if ub.Cond != nil {
			var cerrs config.Errors
			c, cerrs = set.cond("use_backend", ub.Cond)
			errs = append(errs, cerrs...)
		}
		r.rules = append(r.rules, rule{cond: c, backend: idx})
	}
	if fe.DefaultBackend != "" {
		r.def, _ = resolve(fe.DefaultBackendPos, "default_backend", fe.DefaultBackend)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return r, nil
}

// Route returns the index of the backend for req: the first use_backend whose
// condition matches, else the default backend, else -1. It allocates nothing.
func (r *Router) Route(req *h1.Request) int {
	for i := range r.rules {
		if r.rules[i].cond.Match(req) {
			return r.rules[i].backend
		}
	}
	return r.def
}

// ACLs returns the frontend's compiled ACLs, for other rule types of the
// same section (http-request ..., stats, use-service).
func (r *Router) ACLs() *ACLSet { return r.acls }
