package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Ctx is what every scenario gets: the broker's address, its own name (for topic and group
// names no other scenario uses) and a context that ends at the scenario's time limit.
type Ctx struct {
	Bootstrap string
	Scenario  string
	Context   context.Context
}

// Name is a topic or group name of this scenario's own.
func (c *Ctx) Name(suffix string) string {
	return "go-" + strings.ReplaceAll(c.Scenario, "_", "-") + "-" + suffix
}

// Hex renders bytes as the reports carry them: hex, and nil as JSON null, so that a null and an
// empty key or value stay apart.
func Hex(b []byte) any {
	if b == nil {
		return nil
	}
	return hex.EncodeToString(b)
}

// Header is one record header in the report format: [key, hex value or null].
func Header(key string, value []byte) []any { return []any{key, Hex(value)} }

// TestRecord is record i of a deterministic set covering what a broker must keep byte for byte:
// null and empty keys and values, every byte value, repeated and null-valued headers, and large
// compressible values (so compressed batches hold many records).
type TestRecord struct {
	Key, Value []byte
	Headers    [][2][]byte // key, value (value may be nil)
}

func MakeRecord(i int) TestRecord {
	var r TestRecord
	switch i % 5 {
	case 3:
		r.Key = nil
	case 4:
		r.Key = []byte{}
	default:
		r.Key = []byte(fmt.Sprintf("key-%d", i%11))
	}
	switch {
	case i%10 == 9:
		r.Value = nil
	case i%10 == 8:
		r.Value = []byte{}
	default:
		n := (i * 37) % 300
		if i%25 == 0 {
			n = 20000
		}
		v := []byte(fmt.Sprintf("v%07d", i))
		for j := 0; j < n; j++ {
			v = append(v, byte((i+j)%256))
		}
		r.Value = v
	}
	switch i % 3 {
	case 1:
		r.Headers = [][2][]byte{{[]byte("trace"), {0, 1, 0x7f, 0x80, 0xff}}, {[]byte("empty"), {}}}
	case 2:
		r.Headers = [][2][]byte{{[]byte("dup"), []byte("a")}, {[]byte("dup"), []byte("b")}, {[]byte("null-header"), nil}}
	}
	return r
}

// Report is one record in the report format shared with the Java harness.
func Report(partition int32, offset int64, ts time.Time, key, value []byte, headers [][]any) result {
	if headers == nil {
		headers = [][]any{}
	}
	return result{"p": partition, "o": offset, "ts": ts.UnixMilli(), "k": Hex(key), "v": Hex(value), "h": headers}
}

// WaitFor polls a condition until it holds or the timeout passes.
func WaitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// ErrName names an error for the reports (nil -> nil), so tests can assert on the kind.
func ErrName(err error) any {
	if err == nil {
		return nil
	}
	return err.Error()
}

var Codecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}
