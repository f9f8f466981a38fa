// Command podman-docker-shim serves the Docker API on a unix socket by passing every request to
// podman's Docker-compatible service on another socket, with one repair: podman 4.3 drops
// Config.ExposedPorts from host-network containers, while Determined's master reads the trial's
// rendezvous ports from them. The shim copies ExposedPorts into a label at create and puts them
// back into every container inspect. With -label KEY=VALUE it also labels every container it
// creates, so that the cluster that started them can find and remove exactly those.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

const label = "io.mmdet-determined.exposed-ports"

var (
	createPath  = regexp.MustCompile(`^(/v[0-9.]+)?/containers/create$`)
	inspectPath = regexp.MustCompile(`^(/v[0-9.]+)?/containers/[^/]+/json$`)
)

func main() {
	listen := flag.String("listen", "", "unix socket to serve the Docker API on")
	upstream := flag.String("upstream", "", "podman's Docker-compatible unix socket")
	extra := flag.String("label", "", "KEY=VALUE label added to every container created")
	flag.Parse()
	extraKey, extraValue, _ := strings.Cut(*extra, "=")
	if *listen == "" || *upstream == "" {
		log.Fatal("usage: podman-docker-shim -listen SOCKET -upstream SOCKET")
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: "podman"})
			r.Out.Host = "d"
			if r.In.Method == http.MethodPost && createPath.MatchString(r.In.URL.Path) {
				rewriteCreate(r.Out, extraKey, extraValue)
			}
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", *upstream)
			},
			DisableCompression: true,
		},
		FlushInterval:  -1, // container wait and logs stream
		ModifyResponse: restoreExposedPorts,
	}
	_ = os.Remove(*listen)
	ln, err := net.Listen("unix", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: proxy}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		_ = srv.Close()
	}()
	log.Printf("serving the Docker API on %s for %s", *listen, *upstream)
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// rewriteCreate copies a create's ExposedPorts into a label and adds the cluster's label.
func rewriteCreate(out *http.Request, extraKey, extraValue string) {
	body, err := readAll(out.Body)
	if err != nil {
		return
	}
	body = editJSON(body, func(create map[string]any) bool {
		labels, _ := create["Labels"].(map[string]any)
		if labels == nil {
			labels = map[string]any{}
		}
		if ports, ok := create["ExposedPorts"].(map[string]any); ok && len(ports) > 0 {
			encoded, _ := json.Marshal(ports)
			labels[label] = string(encoded)
		}
		if extraKey != "" {
			labels[extraKey] = extraValue
		}
		create["Labels"] = labels
		return true
	})
	out.Body, out.ContentLength = setBody(out.Header, body)
}

// restoreExposedPorts puts the labelled ports back into a container inspect that lost them.
func restoreExposedPorts(resp *http.Response) error {
	if resp.Request.Method != http.MethodGet || !inspectPath.MatchString(resp.Request.URL.Path) ||
		resp.StatusCode != http.StatusOK {
		return nil
	}
	body, err := readAll(resp.Body)
	if err != nil {
		return err
	}
	body = editJSON(body, func(inspect map[string]any) bool {
		config, _ := inspect["Config"].(map[string]any)
		labels, _ := config["Labels"].(map[string]any)
		kept, _ := labels[label].(string)
		current, _ := config["ExposedPorts"].(map[string]any)
		var ports map[string]any
		if config == nil || kept == "" || len(current) > 0 || json.Unmarshal([]byte(kept), &ports) != nil {
			return false
		}
		config["ExposedPorts"] = ports
		return true
	})
	resp.Body, resp.ContentLength = setBody(resp.Header, body)
	resp.Header.Del("Transfer-Encoding")
	return nil
}

func readAll(body io.ReadCloser) ([]byte, error) {
	defer func() { _ = body.Close() }()
	return io.ReadAll(body)
}

// editJSON applies edit to the JSON object in body; body unchanged when it is not one, or when
// edit reports no change.
func editJSON(body []byte, edit func(map[string]any) bool) []byte {
	var object map[string]any
	if json.Unmarshal(body, &object) != nil || object == nil || !edit(object) {
		return body
	}
	if rewritten, err := json.Marshal(object); err == nil {
		return rewritten
	}
	return body
}

// setBody returns body as a message body and its length, and sets its Content-Length header.
func setBody(header http.Header, body []byte) (io.ReadCloser, int64) {
	header.Set("Content-Length", strconv.Itoa(len(body)))
	return io.NopCloser(bytes.NewReader(body)), int64(len(body))
}
