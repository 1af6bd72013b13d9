// paced: an open-loop load generator for one-server latency figures at a fixed rate.
//
// Requests are due at start + i/rate whatever happened to earlier ones (no coordinated
// omission): a slow answer does not delay the next request, and latency is measured from the
// time a request was due, so time spent waiting for a free connection, or in this
// program's own scheduling, counts against the server being measured, never in its favour.
// The send lag (due -> actually written) is reported beside it.
//
// Two modes, the same scheduler:
//
//	grpc: unary gRPC over HTTP/2 without TLS (h2c, prior knowledge); bodies are the
//	      varint-delimited messages of -bodies (what ghz reads); success is grpc-status 0.
//	http: HTTP/1.1 keep-alive POSTs; bodies are the lines of -bodies; success is a 200.
//	http-requests: as http, but each line of -bodies is a request, {"path", "headers", "body"}
//	      (body a string), POSTed to -url with the path appended.
//
// With -serve-noop it is instead the no-op server the benchmarks use as the machine's floor.
//
// It prints one JSON object: counts, achieved rate and latency percentiles in milliseconds,
// from the due instant (p50_ms, ...) and, to tell the client's own lateness apart, from the
// instant the request was handed to the connection (service_p50_ms, ...).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

type result struct {
	dueToDone  time.Duration
	dueToWrite time.Duration
	ok         bool
}

// one request of http-requests mode
type lineRequest struct {
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

func main() {
	mode := flag.String("mode", "grpc", "grpc | http | http-requests")
	url := flag.String("url", "", "target URL (grpc: http://host:port/package.Service/Method)")
	bodiesPath := flag.String("bodies", "", "request bodies (grpc: varint-delimited messages; http: one per line)")
	contentType := flag.String("content-type", "application/json", "http mode: Content-Type")
	rate := flag.Float64("rate", 1000, "requests per second")
	duration := flag.Duration("duration", 8*time.Second, "measured duration")
	warmup := flag.Duration("warmup", 2*time.Second, "unmeasured warm-up at the same rate")
	conns := flag.Int("conns", 2, "connections, requests spread over them round robin (grpc: HTTP/2, many streams each; http: HTTP/1.1, one request at a time each)")
	serve := flag.String("serve-noop", "", "instead of sending load, serve on this address (host:port) a no-op server: gRPC over h2c answering every call OK with an empty message, and 200 \"ok\" to HTTP/1.1 (the latency floor of a server that does nothing, in Go)")
	maxInFlight := flag.Int("max-in-flight", 1024, "requests outstanding at most; beyond it a due request waits (and its wait counts)")
	timeout := flag.Duration("timeout", 5*time.Second, "per-request timeout (counted as an error)")
	flag.Parse()
	if *serve != "" {
		serveNoop(*serve)
		return
	}
	if *mode != "grpc" && *mode != "http" && *mode != "http-requests" {
		fail(fmt.Errorf("-mode %q: grpc, http or http-requests", *mode))
	}
	if *url == "" || *bodiesPath == "" || *rate <= 0 || *conns < 1 {
		flag.Usage()
		os.Exit(2)
	}
	// the generator's own garbage collection would show up as server latency: collect rarely
	debug.SetGCPercent(800)

	bodies, err := readBodies(*mode, *bodiesPath)
	if err != nil {
		fail(err)
	}
	var lines []lineRequest
	if *mode == "http-requests" {
		lines = make([]lineRequest, len(bodies))
		for i, b := range bodies {
			if err := json.Unmarshal(b, &lines[i]); err != nil {
				fail(fmt.Errorf("bodies line %d: %w", i+1, err))
			}
			bodies[i] = []byte(lines[i].Body)
		}
	}
	clients := make([]*http.Client, *conns)
	for i := range clients {
		clients[i] = newClient(*mode, *timeout)
	}
	send := func(i int) bool {
		client := clients[i%len(clients)]
		body := bodies[i%len(bodies)]
		target := *url
		var line *lineRequest
		if lines != nil {
			line = &lines[i%len(lines)]
			target += line.Path
		}
		req, err := http.NewRequest(http.MethodPost, target, bytes.NewReader(body))
		if err != nil {
			return false
		}
		req.ContentLength = int64(len(body))
		if line != nil {
			req.Header.Set("content-type", *contentType)
			for k, v := range line.Headers {
				req.Header.Set(k, v)
			}
		} else if *mode == "grpc" {
			req.Header.Set("content-type", "application/grpc")
			req.Header.Set("te", "trailers")
		} else {
			req.Header.Set("content-type", *contentType)
		}
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return false
		}
		if *mode == "grpc" {
			status := resp.Trailer.Get("grpc-status")
			if status == "" {
				status = resp.Header.Get("grpc-status") // trailers-only answer
			}
			return status == "0"
		}
		return true
	}

	// first: the number of the run's first request (the warm-up's requests come before the
	// measured ones, so bodies are not repeated across the two while there are enough)
	run := func(length time.Duration, first int) ([]result, time.Duration) {
		total := int(length.Seconds() * *rate)
		results := make([]result, total)
		slots := make(chan struct{}, *maxInFlight)
		var wg sync.WaitGroup
		interval := time.Duration(float64(time.Second) / *rate)
		start := time.Now()
		for i := 0; i < total; i++ {
			due := start.Add(time.Duration(i) * interval)
			if wait := time.Until(due); wait > 0 {
				time.Sleep(wait)
			}
			slots <- struct{}{}
			wg.Add(1)
			go func(i int, due time.Time) {
				defer wg.Done()
				written := time.Now()
				ok := send(first + i)
				done := time.Now()
				<-slots
				results[i] = result{dueToDone: done.Sub(due), dueToWrite: written.Sub(due), ok: ok}
			}(i, due)
		}
		wg.Wait()
		return results, time.Since(start)
	}

	warmupRequests := 0
	if *warmup > 0 {
		warm, _ := run(*warmup, 0)
		warmupRequests = len(warm)
	}
	results, elapsed := run(*duration, warmupRequests)
	report(results, elapsed)
}

func newClient(mode string, timeout time.Duration) *http.Client {
	if mode == "grpc" {
		transport := &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
		}
		return &http.Client{Transport: transport, Timeout: timeout}
	}
	// one keep-alive connection per client (-conns clients): a busy server gets requests
	// queued on those connections, not a new connection per waiting request
	transport := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DisableCompression: true}
	return &http.Client{Transport: transport, Timeout: timeout}
}

func readBodies(mode, path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var bodies [][]byte
	if mode == "grpc" {
		for len(data) > 0 {
			size, n := binary.Uvarint(data)
			if n <= 0 || uint64(len(data)-n) < size {
				return nil, errors.New("bodies: not a varint-delimited message stream")
			}
			message := data[n : n+int(size)]
			framed := make([]byte, 5+len(message))
			binary.BigEndian.PutUint32(framed[1:5], uint32(len(message)))
			copy(framed[5:], message)
			bodies = append(bodies, framed)
			data = data[n+int(size):]
		}
	} else {
		scanner := bufio.NewScanner(bytes.NewReader(data))
		scanner.Buffer(make([]byte, 1<<20), 64<<20)
		for scanner.Scan() {
			if line := strings.TrimSpace(scanner.Text()); line != "" {
				bodies = append(bodies, []byte(line))
			}
		}
	}
	if len(bodies) == 0 {
		return nil, errors.New("bodies: none")
	}
	return bodies, nil
}

func report(results []result, elapsed time.Duration) {
	var latencies, lags, service []float64
	errorsCount := 0
	for _, r := range results {
		if !r.ok {
			errorsCount++
			continue
		}
		latencies = append(latencies, float64(r.dueToDone.Microseconds())/1000)
		lags = append(lags, float64(r.dueToWrite.Microseconds())/1000)
		service = append(service, float64((r.dueToDone-r.dueToWrite).Microseconds())/1000)
	}
	slices.Sort(latencies)
	slices.Sort(lags)
	slices.Sort(service)
	pct := func(values []float64, p float64) float64 {
		if len(values) == 0 {
			return 0
		}
		i := int(p / 100 * float64(len(values)))
		if i >= len(values) {
			i = len(values) - 1
		}
		return values[i]
	}
	out := map[string]any{
		"requests_total":   len(results),
		"errors":           errorsCount,
		"rps":              float64(len(latencies)) / elapsed.Seconds(),
		"p50_ms":           pct(latencies, 50),
		"p90_ms":           pct(latencies, 90),
		"p99_ms":           pct(latencies, 99),
		"p999_ms":          pct(latencies, 99.9),
		"max_ms":           pct(latencies, 100),
		"send_lag_p50_ms":  pct(lags, 50),
		"send_lag_p99_ms":  pct(lags, 99),
		"send_lag_p999_ms": pct(lags, 99.9),
		"service_p50_ms":   pct(service, 50),
		"service_p99_ms":   pct(service, 99),
		"service_p999_ms":  pct(service, 99.9),
	}
	encoded, _ := json.Marshal(out)
	fmt.Println(string(encoded))
}

// serveNoop answers every gRPC call at once (grpc-status 0, an empty message: what an empty
// CheckResponse encodes to) without decoding it, and HTTP/1.1 with 200 "ok".
func serveNoop(addr string) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("content-type"), "application/grpc") {
			w.Header().Set("content-type", "application/grpc")
			w.Header().Set("trailer", "grpc-status")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte{0, 0, 0, 0, 0})
			w.Header().Set("grpc-status", "0")
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	server := &http.Server{Addr: addr, Handler: h2c.NewHandler(handler, &http2.Server{})}
	fail(server.ListenAndServe())
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "paced:", err)
	os.Exit(1)
}
