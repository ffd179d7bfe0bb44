package config

import (
	"fmt"
	"strconv"
	"strings"
)

// This file is the lexer: it cuts one configuration line into words the way
// HAProxy's parse_line() does (configuration.txt, 2.2 "Quoting and escaping"
// and 2.3 "Environment variables"):
//
//   - words are separated by unprotected spaces or tabs; an unprotected '#'
//     starts a comment, even in the middle of a word;
//   - a backslash outside single quotes escapes ' ', '\t', '#', '\\', '\'',
//     '"' and '$', and encodes \r, \n, \t and \xNN; any other backslash is
//     kept as is (so regexes like `\.` or `\1` survive);
//   - double quotes protect spaces, '#' and single quotes, still process
//     backslashes, and expand $NAME, ${NAME}, ${NAME-default} and
//     ${NAME[*]} (the last one splits the value into several words) from the
//     environment; $.FILE, $.LINE and $.SECTION are pseudo-variables;
//   - single quotes protect everything until the next single quote;
//   - quoted and unquoted parts next to each other form one word, and a pair
//     of quotes with nothing inside is an empty word.

// lexEnv is what the lexer needs from the outside world.
type lexEnv struct {
	file    string
	line    int
	section string // for $.SECTION
	lookup  func(string) (string, bool)
}

// lexError is a problem on one line; the caller adds FILE:LINE.
type lexError struct {
	msg string
}

func (e *lexError) Error() string { return e.msg }

func lexErrorf(format string, args ...any) *lexError {
	return &lexError{msg: fmt.Sprintf(format, args...)}
}

// splitLines cuts a file into lines. A trailing "\r" is dropped (CRLF files),
// and the missing final newline is tolerated.
func splitLines(data []byte) []string {
	s := string(data)
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	return lines
}

func isBlank(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'
}

// lexLine returns the words of one line. Columns in messages are 1-based
// byte offsets.
func lexLine(s string, env *lexEnv) ([]string, error) {
	var (
		words  []string
		cur    []byte
		inWord bool
	)
	flush := func() {
		if inWord {
			words = append(words, string(cur))
			cur = cur[:0]
			inWord = false
		}
	}
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == 0:
			return nil, lexErrorf("stray NUL character at column %d", i+1)
		case isBlank(c):
			flush()
			i++
		case c == '#':
			i = len(s) // comment until the end of the line
		case c == '\'':
			inWord = true
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, lexErrorf("unmatched single quote (') starting at column %d", i+1)
			}
			cur = append(cur, s[i+1:i+1+end]...)
			i += end + 2
		case c == '"':
			inWord = true
			start := i
			i++
			closed := false
			for i < len(s) && !closed {
				switch c := s[i]; c {
				case '"':
					closed = true
					i++
				case '\\':
					out, next, err := unescape(s, i)
					if err != nil {
						return nil, err
					}
					cur = append(cur, out...)
					i = next
				case '$':
					next, err := expandVar(s, i, env, &cur, &words)
					if err != nil {
						return nil, err
					}
					i = next
				case 0:
					return nil, lexErrorf("stray NUL character at column %d", i+1)
				default:
					cur = append(cur, c)
					i++
				}
			}
			if !closed {
				return nil, lexErrorf("unmatched double quote (\") starting at column %d", start+1)
			}
		case c == '\\':
			inWord = true
			out, next, err := unescape(s, i)
			if err != nil {
				return nil, err
			}
			cur = append(cur, out...)
			i = next
		default:
			inWord = true
			cur = append(cur, c)
			i++
		}
	}
	flush()
	return words, nil
}

// unescape decodes the backslash sequence at s[i] and returns its bytes and
// the index after it.
func unescape(s string, i int) (string, int, error) {
	if i+1 >= len(s) {
		return `\`, i + 1, nil // a trailing backslash is kept
	}
	switch c := s[i+1]; c {
	case '\\', ' ', '\t', '#', '\'', '"', '$':
		return string(c), i + 2, nil
	case 'r':
		return "\r", i + 2, nil
	case 'n':
		return "\n", i + 2, nil
	case 't':
		return "\t", i + 2, nil
	case 'x':
		if i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				return string([]byte{byte(v)}), i + 4, nil
			}
		}
		return "", 0, lexErrorf(`invalid or incomplete '\x' escape at column %d (expected two hex digits)`, i+1)
	default:
		// Not an escape HAProxy knows: keep the backslash, and let the next
		// character be read normally.
		return `\`, i + 1, nil
	}
}

func isVarStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isVarChar(c byte) bool {
	return isVarStart(c) || (c >= '0' && c <= '9')
}

// expandVar expands the environment variable at s[i] == '$' inside double
// quotes, appending to cur (and to words when ${NAME[*]} splits the value).
func expandVar(s string, i int, env *lexEnv, cur *[]byte, words *[]string) (int, error) {
	start := i
	i++
	braces := i < len(s) && s[i] == '{'
	if braces {
		i++
	}
	nameStart := i
	if i < len(s) && (isVarStart(s[i]) || s[i] == '.') {
		i++
		for i < len(s) && isVarChar(s[i]) {
			i++
		}
	}
	name := s[nameStart:i]
	if name == "" || name == "." {
		if braces {
			return 0, lexErrorf("invalid environment variable name after '${' at column %d", start+1)
		}
		*cur = append(*cur, '$') // a lone '$' is kept
		return start + 1, nil
	}
	split := false
	def, hasDef := "", false
	if braces {
		if strings.HasPrefix(s[i:], "[*]") {
			split = true
			i += 3
		} else if i < len(s) && s[i] == '-' {
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return 0, lexErrorf("missing '}' to close '${%s' at column %d", name, start+1)
			}
			def, hasDef = s[i+1:i+end], true
			i += end
		}
		if i >= len(s) || s[i] != '}' {
			return 0, lexErrorf("missing '}' to close '${%s' at column %d", name, start+1)
		}
		i++
	}
	val, ok := lookupVar(name, env)
	if !ok && hasDef {
		val = def
	}
	if !split {
		*cur = append(*cur, val...)
		return i, nil
	}
	for j, f := range strings.Fields(val) {
		if j > 0 {
			*words = append(*words, string(*cur))
			*cur = (*cur)[:0]
		}
		*cur = append(*cur, f...)
	}
	return i, nil
}

func lookupVar(name string, env *lexEnv) (string, bool) {
	switch name {
	case ".FILE":
		return env.file, true
	case ".LINE":
		return strconv.Itoa(env.line), true
	case ".SECTION":
		return env.section, true
	}
	if strings.HasPrefix(name, ".") || env.lookup == nil {
		return "", false
	}
	return env.lookup(name)
}
