// Command compat-harness runs Go client compatibility scenarios (IBM/sarama, twmb/franz-go)
// against one broker and prints one JSON line per scenario on stdout:
//
//	{"scenario": name, "ok": bool, "seconds": s, "result": {...} | "error": "..."}
//
// Usage: compat-harness BOOTSTRAP SCENARIO... Each scenario has its own topics and groups and a
// time limit; a failing one does not stop the others. The Python tests (tests/compat/test_go.py)
// assert on the reports and on what the broker stored.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"time"
)

type result = map[string]any

// scenario runs against the broker at ctx's bootstrap and returns what it observed.
type scenario func(c *Ctx) (result, error)

var scenarios = map[string]scenario{}

func register(name string, s scenario) { scenarios[name] = s }

const scenarioTimeout = 120 * time.Second

func main() {
	if len(os.Args) < 3 {
		names := make([]string, 0, len(scenarios))
		for n := range scenarios {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: compat-harness BOOTSTRAP SCENARIO...; scenarios: %s\n", strings.Join(names, " "))
		os.Exit(2)
	}
	bootstrap := os.Args[1]
	enc := json.NewEncoder(os.Stdout)
	for _, name := range os.Args[2:] {
		_ = enc.Encode(run(bootstrap, name))
	}
}

func run(bootstrap, name string) result {
	line := result{"scenario": name}
	s, ok := scenarios[name]
	if !ok {
		line["ok"] = false
		line["error"] = "unknown scenario " + name
		return line
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	type outcome struct {
		r   result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- outcome{nil, fmt.Errorf("panic: %v\n%s", p, debug.Stack())}
			}
		}()
		r, err := s(&Ctx{Bootstrap: bootstrap, Scenario: name, Context: ctx})
		done <- outcome{r, err}
	}()
	select {
	case o := <-done:
		if o.err != nil {
			line["ok"] = false
			line["error"] = o.err.Error()
		} else {
			line["ok"] = true
			line["result"] = o.r
		}
	case <-ctx.Done():
		line["ok"] = false
		line["error"] = fmt.Sprintf("timed out after %s", scenarioTimeout)
	}
	line["seconds"] = time.Since(start).Seconds()
	return line
}
