package config

// build turns the parsed proxies into the model and runs the checks that need
// the whole configuration (references between proxies).
func (p *parser) build() *Config {
	cfg := &Config{Global: p.global}
	for _, px := range p.proxies {
		if px.discard {
			continue
		}
		opts := px.opts.resolve()
		hasFE := px.kind == secFrontend || px.kind == secListen
		hasBE := px.kind == secBackend || px.kind == secListen
		p.checkTimeouts(px, hasFE, hasBE)
		if hasFE {
			fe := &Frontend{
				Pos:               px.pos,
				Name:              px.name,
				Mode:              px.mode,
				Binds:             px.binds,
				MaxConn:           px.maxconn,
				Timeouts:          px.timeouts,
				Options:           opts,
				Logs:              px.logs,
				ACLs:              px.acls,
				UseBackends:       px.useBackends,
				HTTPRules:         px.httpRules,
				Stats:             px.stats,
				DefaultBackend:    px.defBackend,
				DefaultBackendPos: px.defBackendPos,
			}
			if px.kind == secListen && fe.DefaultBackend == "" {
				fe.DefaultBackend, fe.DefaultBackendPos = px.name, px.pos
			}
			if len(fe.Binds) == 0 {
				if px.kind == secListen {
					p.warnf(px.pos, "listen '%s' has no 'bind' line; declare it as a backend if this was intended", px.name)
				} else {
					p.warnf(px.pos, "frontend '%s' has no 'bind' line; it receives no traffic", px.name)
				}
			}
			if fe.Mode == ModeTCP && fe.Options.HTTPLog {
				p.warnf(px.opts.httpLogPos, "'option httplog' needs 'mode http'; %s '%s' is in tcp mode: falling back to 'option tcplog'",
					px.kind, px.name)
				fe.Options.HTTPLog, fe.Options.TCPLog = false, true
			}
			if fe.Mode == ModeTCP && fe.Options.ForwardFor {
				p.warnf(px.opts.forwardForPos, "'option forwardfor' needs 'mode http'; %s '%s' is in tcp mode, so it is ignored there",
					px.kind, px.name)
				fe.Options.ForwardFor = false
			}
			cfg.Frontends = append(cfg.Frontends, fe)
		}
		if hasBE {
			be := &Backend{
				Pos:      px.pos,
				Name:     px.name,
				Mode:     px.mode,
				Balance:  px.balance,
				Retries:  px.retries,
				Timeouts: px.timeouts,
				Options:  opts,
				Source:   px.source,
				FullConn: px.fullconn,
				Servers:  px.servers,
			}
			be.CheckExpect = px.checkExpect
			if px.kind == secBackend {
				be.ACLs = px.acls
			}
			if be.Mode == ModeTCP && l7Algos[be.Balance.Algo] {
				p.warnf(px.pos, "'balance %s' needs 'mode http'; %s '%s' is in tcp mode, so it falls back to 'balance roundrobin'",
					be.Balance.Algo, px.kind, px.name)
				be.Balance = Balance{Algo: "roundrobin"}
			}
			if be.Mode == ModeTCP && be.Options.ForwardFor && !hasFE {
				p.warnf(px.opts.forwardForPos, "'option forwardfor' needs 'mode http'; %s '%s' is in tcp mode, so it is ignored there",
					px.kind, px.name)
			}
			if be.Mode == ModeTCP {
				be.Options.ForwardFor = false
			}
			cfg.Backends = append(cfg.Backends, be)
		}
	}
	p.checkReferences(cfg)
	cfg.Warnings = p.sortDiags(p.warns)
	p.errs = p.sortDiags(p.errs)
	return cfg
}

// checkTimeouts warns, as HAProxy does, about a proxy missing the timeouts
// every proxy needs: client on the frontend side, connect and server on the
// backend side.
func (p *parser) checkTimeouts(px *proxy, hasFE, hasBE bool) {
	var missing []string
	if hasFE && px.timeouts.Client == 0 {
		missing = append(missing, "timeout client")
	}
	if hasBE && px.timeouts.Connect == 0 {
		missing = append(missing, "timeout connect")
	}
	if hasBE && px.timeouts.Server == 0 {
		missing = append(missing, "timeout server")
	}
	if len(missing) > 0 {
		p.warnf(px.pos, "missing timeouts for %s '%s': set %s to a non-zero value (until then sluice uses its defaults: connect 5s, client and server 50s)",
			px.kind, px.name, quoteList(missing))
	}
}

// checkReferences checks that default_backend and use_backend name existing
// backends that the frontend's mode can use.
func (p *parser) checkReferences(cfg *Config) {
	names := make([]string, 0, len(cfg.Backends))
	for _, b := range cfg.Backends {
		names = append(names, b.Name)
	}
	check := func(fe *Frontend, name string, pos Pos, kw string) {
		be := cfg.Backend(name)
		if be == nil {
			p.errorf(pos, "%s '%s': backend '%s' named by '%s' does not exist%s",
				kindOf(fe, cfg), fe.Name, name, kw, didYouMean(name, names))
			return
		}
		if fe.Mode == ModeHTTP && be.Mode == ModeTCP {
			p.errorf(pos, "%s '%s' is in http mode and cannot use backend '%s', which is in tcp mode (see 'mode')",
				kindOf(fe, cfg), fe.Name, name)
		}
	}
	for _, fe := range cfg.Frontends {
		for _, ub := range fe.UseBackends {
			check(fe, ub.Backend, ub.Pos, "use_backend")
		}
		if fe.DefaultBackend != "" {
			check(fe, fe.DefaultBackend, fe.DefaultBackendPos, "default_backend")
		}
	}
}

// kindOf says whether a frontend came from a listen section.
func kindOf(fe *Frontend, cfg *Config) string {
	if be := cfg.Backend(fe.Name); be != nil && be.Pos == fe.Pos {
		return "listen"
	}
	return "frontend"
}
