package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// maxTimeMS is the largest time HAProxy accepts (2^31-1 ms, about 24.8 days).
const maxTimeMS = math.MaxInt32

// parseTime reads an HAProxy time (configuration.txt 2.5): an unsigned
// integer followed by an optional unit among us, ms, s, m, h and d;
// milliseconds when there is no unit. Like HAProxy's timers it is rounded up
// to the millisecond (so 500us is 1ms, and only 0 is 0).
func parseTime(s string) (time.Duration, error) {
	digits := 0
	for digits < len(s) && s[digits] >= '0' && s[digits] <= '9' {
		digits++
	}
	if digits == 0 {
		if s == "" {
			return 0, fmt.Errorf("empty value")
		}
		return 0, fmt.Errorf("expected a number followed by an optional unit (us, ms, s, m, h, d)")
	}
	tooLarge := fmt.Errorf("value too large (the maximum is %dms, about 24.8 days)", maxTimeMS)
	n, err := strconv.ParseUint(s[:digits], 10, 64)
	if err != nil {
		return 0, tooLarge
	}
	var unit time.Duration
	switch u := s[digits:]; u {
	case "", "ms":
		unit = time.Millisecond
	case "us":
		unit = time.Microsecond
	case "s":
		unit = time.Second
	case "m":
		unit = time.Minute
	case "h":
		unit = time.Hour
	case "d":
		unit = 24 * time.Hour
	default:
		return 0, fmt.Errorf("unknown unit '%s' (expected us, ms, s, m, h or d)", u)
	}
	if n > uint64(math.MaxInt64/unit) {
		return 0, tooLarge
	}
	d := time.Duration(n) * unit
	if r := d % time.Millisecond; r != 0 {
		d += time.Millisecond - r
	}
	if d > maxTimeMS*time.Millisecond {
		return 0, tooLarge
	}
	return d, nil
}

// parseSize reads an HAProxy size (configuration.txt 2.6): an unsigned
// integer followed by an optional case-insensitive unit k, m or g (powers of
// 1024); bytes when there is no unit.
func parseSize(s string) (int64, error) {
	digits := 0
	for digits < len(s) && s[digits] >= '0' && s[digits] <= '9' {
		digits++
	}
	if digits == 0 {
		if s == "" {
			return 0, fmt.Errorf("empty value")
		}
		return 0, fmt.Errorf("expected a number followed by an optional unit (k, m, g)")
	}
	n, err := strconv.ParseInt(s[:digits], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("value too large")
	}
	var mult int64
	switch u := strings.ToLower(s[digits:]); u {
	case "":
		mult = 1
	case "k":
		mult = 1 << 10
	case "m":
		mult = 1 << 20
	case "g":
		mult = 1 << 30
	default:
		return 0, fmt.Errorf("unknown unit '%s' (expected k, m or g)", s[digits:])
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("value too large")
	}
	return n * mult, nil
}

// parseUint reads a decimal integer in [lo, hi].
func parseUint(s string, lo, hi int) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("empty value")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			if i == 0 && s[i] == '-' && lo >= 0 {
				return 0, fmt.Errorf("negative values are not allowed")
			}
			return 0, fmt.Errorf("expected an integer")
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > int64(hi) || n < int64(lo) {
		return 0, fmt.Errorf("out of range (expected %d..%d)", lo, hi)
	}
	return int(n), nil
}
