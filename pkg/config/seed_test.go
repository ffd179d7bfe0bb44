package config

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The two seed configurations must parse unchanged, with no error and no
// warning. They are read from the repository's sibling shared/configs folder
// when it is there, and always from the verbatim copies in testdata.
var seedFiles = []string{"seed-basic.cfg", "seed-websocket.cfg"}

func loadSeed(t *testing.T, path string) *Config {
	t.Helper()
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	if len(cfg.Warnings) > 0 {
		t.Errorf("Load(%s): unexpected warnings: %v", path, cfg.Warnings)
	}
	return cfg
}

func TestSeedCopiesAreVerbatim(t *testing.T) {
	for _, name := range seedFiles {
		shared := filepath.Join("..", "..", "..", "shared", "configs", name)
		want, err := os.ReadFile(shared)
		if err != nil {
			t.Skipf("shared seed configurations not available (%v); testing the copies in testdata only", err)
		}
		got, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("testdata/%s differs from %s; copy it again", name, shared)
		}
	}
}

func TestSeeds(t *testing.T) {
	for _, dir := range []string{"testdata", filepath.Join("..", "..", "..", "shared", "configs")} {
		t.Run(dir, func(t *testing.T) {
			if _, err := os.Stat(filepath.Join(dir, seedFiles[0])); err != nil {
				t.Skipf("seed configurations not available in %s: %v", dir, err)
			}
			t.Run("basic", func(t *testing.T) { checkSeedBasic(t, loadSeed(t, filepath.Join(dir, "seed-basic.cfg"))) })
			t.Run("websocket", func(t *testing.T) {
				checkSeedWebsocket(t, loadSeed(t, filepath.Join(dir, "seed-websocket.cfg")))
			})
		})
	}
}

func checkCommon(t *testing.T, cfg *Config, tunnel time.Duration) {
	t.Helper()
	if cfg.Global.MaxConn != 256 {
		t.Errorf("global maxconn = %d, want 256", cfg.Global.MaxConn)
	}
	if len(cfg.Frontends) != 1 {
		t.Fatalf("%d frontends, want 1", len(cfg.Frontends))
	}
	fe := cfg.Frontends[0]
	if fe.Mode != ModeHTTP || !fe.Options.HTTPLog {
		t.Errorf("frontend mode %v, httplog %v; want http, true", fe.Mode, fe.Options.HTTPLog)
	}
	if len(fe.Binds) != 1 || fe.Binds[0].Addr != ":80" {
		t.Errorf("frontend binds = %+v, want one on :80", fe.Binds)
	}
	if len(fe.Logs) != 1 || !fe.Logs[0].Global {
		t.Errorf("frontend logs = %+v, want 'log global'", fe.Logs)
	}
	want := Timeouts{Connect: 5 * time.Second, Client: 10 * time.Second, Server: 10 * time.Second, Tunnel: tunnel}
	if fe.Timeouts != want {
		t.Errorf("frontend timeouts = %+v, want %+v", fe.Timeouts, want)
	}
	for _, be := range cfg.Backends {
		if be.Timeouts != want {
			t.Errorf("backend %s timeouts = %+v, want %+v", be.Name, be.Timeouts, want)
		}
		if be.Mode != ModeHTTP || be.Balance.Algo != "roundrobin" || be.Retries != 3 {
			t.Errorf("backend %s: mode %v, balance %q, retries %d; want http, roundrobin, 3",
				be.Name, be.Mode, be.Balance.Algo, be.Retries)
		}
	}
}

func checkServers(t *testing.T, be *Backend, want []Server) {
	t.Helper()
	if be == nil {
		t.Fatal("backend missing")
	}
	if len(be.Servers) != len(want) {
		t.Fatalf("backend %s has %d servers, want %d", be.Name, len(be.Servers), len(want))
	}
	for i, w := range want {
		s := be.Servers[i]
		if s.Name != w.Name || s.Addr != w.Addr || s.MaxConn != w.MaxConn || s.Source.Addr != w.Source.Addr {
			t.Errorf("backend %s server %d = %s %s maxconn %d source %q; want %s %s maxconn %d source %q",
				be.Name, i, s.Name, s.Addr, s.MaxConn, s.Source.Addr, w.Name, w.Addr, w.MaxConn, w.Source.Addr)
		}
		if s.Weight != 1 || s.Inter != 2*time.Second || s.Rise != 2 || s.Fall != 3 || s.Check || s.Backup || s.Disabled {
			t.Errorf("backend %s server %s: unexpected defaults %+v", be.Name, s.Name, s)
		}
	}
}

func checkSeedBasic(t *testing.T, cfg *Config) {
	checkCommon(t, cfg, 0)
	fe := cfg.Frontends[0]
	if fe.Name != "httptraffic" || fe.DefaultBackend != "servers" || len(fe.UseBackends) != 0 {
		t.Errorf("frontend %s default_backend %q use_backend %v", fe.Name, fe.DefaultBackend, fe.UseBackends)
	}
	if !fe.Options.DontLogNull || !fe.Options.Redispatch {
		t.Errorf("frontend options = %+v, want dontlognull and redispatch", fe.Options)
	}
	if fe.Binds[0].Pos.Line != 16 || fe.DefaultBackendPos.Line != 17 {
		t.Errorf("positions: bind %v, default_backend %v; want lines 16 and 17", fe.Binds[0].Pos, fe.DefaultBackendPos)
	}
	if len(cfg.Backends) != 1 {
		t.Fatalf("%d backends, want 1", len(cfg.Backends))
	}
	be := cfg.Backend("servers")
	if !be.Options.Redispatch {
		t.Error("backend servers: option redispatch not inherited")
	}
	checkServers(t, be, []Server{
		{Name: "web1", Addr: "192.168.1.1:80", MaxConn: 32},
		{Name: "web2", Addr: "192.168.1.2:80", MaxConn: 32},
		{Name: "web3", Addr: "192.168.1.3:80", MaxConn: 32},
	})
	if be.Servers[2].Pos.Line != 22 {
		t.Errorf("web3 position %v, want line 22", be.Servers[2].Pos)
	}
}

func checkSeedWebsocket(t *testing.T, cfg *Config) {
	checkCommon(t, cfg, 3600*time.Second)
	fe := cfg.Frontends[0]
	if fe.Name != "public" || fe.DefaultBackend != "servers" {
		t.Errorf("frontend %s default_backend %q", fe.Name, fe.DefaultBackend)
	}
	if fe.Options.DontLogNull || fe.Options.Redispatch {
		t.Errorf("frontend options = %+v, want neither dontlognull nor redispatch", fe.Options)
	}
	if len(fe.ACLs) != 1 {
		t.Fatalf("ACLs = %+v, want one", fe.ACLs)
	}
	acl := fe.ACLs[0]
	if acl.Name != "is_websocket" || len(acl.Args) != 3 || acl.Args[0] != "path_beg" || acl.Args[1] != "-i" ||
		acl.Args[2] != "/websockets" || acl.Pos.Line != 15 {
		t.Errorf("ACL = %+v, want is_websocket path_beg -i /websockets at line 15", acl)
	}
	if len(fe.UseBackends) != 1 {
		t.Fatalf("use_backend rules = %+v, want one", fe.UseBackends)
	}
	ub := fe.UseBackends[0]
	if ub.Backend != "ws" || ub.Cond == nil || ub.Cond.Unless || len(ub.Cond.Terms) != 1 || ub.Cond.Terms[0] != "is_websocket" {
		t.Errorf("use_backend = %+v (cond %+v), want ws if is_websocket", ub, ub.Cond)
	}
	if len(cfg.Backends) != 2 {
		t.Fatalf("%d backends, want 2", len(cfg.Backends))
	}
	checkServers(t, cfg.Backend("servers"), []Server{
		{Name: "web1", Addr: "192.168.1.1:80", MaxConn: 32},
		{Name: "web2", Addr: "192.168.1.2:80", MaxConn: 32},
	})
	checkServers(t, cfg.Backend("ws"), []Server{
		{Name: "ws1", Addr: "192.168.1.11:80", MaxConn: 1000, Source: Source{Addr: "192.168.1.100"}},
		{Name: "ws2", Addr: "192.168.1.12:80", MaxConn: 1000, Source: Source{Addr: "192.168.1.101"}},
	})
	if src := cfg.Backend("ws").Servers[1].Source; src.Pos.Line != 25 || len(src.Args) != 0 {
		t.Errorf("ws2 source = %+v, want position line 25 and no extra argument", src)
	}
}
