package h1

// Chunked tracks the chunked transfer coding (RFC 9112 7.1) of a body that
// is forwarded as it is: it validates the framing and finds where the body
// ends, without copying. The zero value is ready at the start of a body.
type Chunked struct {
	state   chunkState
	size    uint64 // remaining data bytes of the current chunk
	digits  int    // hex digits seen in the current size
	lineLen int    // bytes in the current size/trailer line
	trailer int    // bytes of trailer section seen
	semi    bool   // a ';' started the extensions of this size line
}

type chunkState uint8

const (
	csSize        chunkState = iota // reading hex digits
	csExt                           // after size: BWS, ';' extensions, until CR
	csSizeLF                        // CR seen after the size line, expect LF
	csData                          // size bytes of data
	csDataCR                        // CR after data
	csDataLF                        // LF after data
	csTrailer                       // at the start of a trailer line (or the final CRLF)
	csTrailerName                   // inside a trailer field name
	csTrailerLn                     // inside a trailer field value
	csTrailerLF                     // CR seen in trailer line, expect LF
	csFinalLF                       // CR of the final empty line seen, expect LF
	csDone
)

// Limits of the chunked framing.
const (
	maxChunkLine   = 4096
	maxTrailerSize = MaxHeaderBytes
)

var (
	errChunkSize = bad("invalid chunk size")
	errChunkLine = bad("invalid chunk framing")
	errTrailer   = bad("invalid trailer")
)

// Done reports whether the whole body, trailers included, has been seen.
func (c *Chunked) Done() bool { return c.state == csDone }

// InData reports whether the next Next call returns chunk data, and how many
// bytes of it remain in the current chunk.
func (c *Chunked) InData() (bool, uint64) { return c.state == csData, c.size }

// Next consumes framing or data from p. It returns the number of bytes
// consumed and whether they are chunk data (as opposed to framing). It stops
// at the end of the body: bytes after it are not consumed. A caller that
// forwards the body unchanged can ignore data; one that decodes it keeps
// only data bytes.
func (c *Chunked) Next(p []byte) (n int, data bool, err error) {
	if c.state == csData {
		if uint64(len(p)) > c.size {
			n = int(c.size)
		} else {
			n = len(p)
		}
		c.size -= uint64(n)
		if c.size == 0 {
			c.state = csDataCR
		}
		return n, true, nil
	}
	for n < len(p) {
		b := p[n]
		switch c.state {
		case csSize:
			v, ok := unhex(b)
			if ok {
				// At most 16 digits, leading zeros included, as net/http:
				// no overflow, and no disagreement on "000...0".
				if c.digits >= 16 {
					return n, false, errChunkSize
				}
				c.size = c.size<<4 | uint64(v)
				c.digits++
			} else {
				if c.digits == 0 {
					return n, false, errChunkSize
				}
				switch b {
				case '\r':
					c.state = csSizeLF
				case ';':
					c.state, c.semi = csExt, true
				case ' ', '\t':
					c.state = csExt
				default:
					return n, false, errChunkSize
				}
			}
		case csExt:
			switch {
			case b == '\r':
				c.state = csSizeLF
			case b == '\n' || b == 0 || (b < ' ' && b != '\t') || b == 0x7f:
				return n, false, errChunkLine
			case b == ';':
				c.semi = true
			case !c.semi && b != ' ' && b != '\t':
				return n, false, errChunkSize // "5 x": junk after the size
			}
		case csSizeLF:
			if b != '\n' {
				return n, false, errChunkLine
			}
			c.digits, c.lineLen, c.semi = 0, 0, false
			if c.size == 0 {
				c.state = csTrailer
			} else {
				c.state = csData
				return n + 1, false, nil
			}
		case csData:
			return n, false, nil // let the caller call again for data
		case csDataCR:
			if b != '\r' {
				return n, false, errChunkLine
			}
			c.state = csDataLF
		case csDataLF:
			if b != '\n' {
				return n, false, errChunkLine
			}
			c.state = csSize
		case csTrailer:
			switch b {
			case '\r':
				c.state = csFinalLF
			case ' ', '\t', '\n', ':':
				return n, false, errTrailer
			default:
				if !tchar[b] {
					return n, false, errTrailer
				}
				c.state = csTrailerName
			}
		case csTrailerName:
			// A trailer line is a field line: token ":" value.
			switch {
			case b == ':':
				c.state = csTrailerLn
			case !tchar[b]:
				return n, false, errTrailer
			}
		case csTrailerLn:
			switch {
			case b == '\r':
				c.state = csTrailerLF
			case b == '\n' || (b < ' ' && b != '\t') || b == 0x7f:
				return n, false, errTrailer
			}
		case csTrailerLF:
			if b != '\n' {
				return n, false, errTrailer
			}
			c.state = csTrailer
		case csFinalLF:
			if b != '\n' {
				return n, false, errTrailer
			}
			c.state = csDone
			return n + 1, false, nil
		case csDone:
			return n, false, nil
		}
		n++
		switch c.state {
		case csSize, csExt, csSizeLF:
			c.lineLen++
			if c.lineLen > maxChunkLine {
				return n, false, errChunkLine
			}
		case csTrailer, csTrailerName, csTrailerLn, csTrailerLF, csFinalLF:
			c.trailer++
			if c.trailer > maxTrailerSize {
				return n, false, errTrailer
			}
		}
	}
	return n, false, nil
}

// Scan consumes as much of p as belongs to the body and returns how much
// that is; it is Next in a loop for callers that forward bytes unchanged.
func (c *Chunked) Scan(p []byte) (int, error) {
	total := 0
	for total < len(p) && c.state != csDone {
		n, _, err := c.Next(p[total:])
		total += n
		if err != nil {
			return total, err
		}
		if n == 0 {
			break
		}
	}
	return total, nil
}

func unhex(b byte) (byte, bool) {
	switch {
	case '0' <= b && b <= '9':
		return b - '0', true
	case 'a' <= b && b <= 'f':
		return b - 'a' + 10, true
	case 'A' <= b && b <= 'F':
		return b - 'A' + 10, true
	}
	return 0, false
}
