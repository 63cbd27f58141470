// Command adapter-oracle prints the PromQL that prometheus-adapter's own pkg/naming renders
// for a list of (config, request) cases, so kube-metrics-bridge can compare its conversion.
//
// Usage (in this directory): go run . ../cases.json > ../expected.json
// Config paths in the cases are relative to the cases file.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	prom "sigs.k8s.io/prometheus-adapter/pkg/client"
	"sigs.k8s.io/prometheus-adapter/pkg/config"
	"sigs.k8s.io/prometheus-adapter/pkg/naming"
)

type testCase struct {
	Name      string `json:"name"`
	Config    string `json:"config"`
	API       string `json:"api"` // "custom" or "external"
	Rule      int    `json:"rule"`
	Series    string `json:"series"`
	Group     string `json:"group,omitempty"`
	Resource  string `json:"resource,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Object    string `json:"object,omitempty"`
	Selector  string `json:"selector,omitempty"`
}

type result struct {
	Name   string `json:"name"`
	Kept   bool   `json:"kept"`
	Metric string `json:"metric,omitempty"`
	Query  string `json:"query,omitempty"`
	Error  string `json:"error,omitempty"`
}

func mapper() apimeta.RESTMapper {
	m := apimeta.NewDefaultRESTMapper(nil)
	add := func(group, version, kind string, namespaced bool) {
		scope := apimeta.RESTScopeRoot
		if namespaced {
			scope = apimeta.RESTScopeNamespace
		}
		m.Add(schema.GroupVersionKind{Group: group, Version: version, Kind: kind}, scope)
	}
	add("", "v1", "Pod", true)
	add("", "v1", "Service", true)
	add("", "v1", "Namespace", false)
	add("", "v1", "Node", false)
	add("apps", "v1", "Deployment", true)
	add("apps", "v1", "StatefulSet", true)
	add("networking.k8s.io", "v1", "Ingress", true)
	add("batch", "v1", "Job", true)
	return m
}

func run(path string) ([]result, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cases []testCase
	if err := json.Unmarshal(raw, &cases); err != nil {
		return nil, err
	}
	out := make([]result, 0, len(cases))
	for _, c := range cases {
		r := result{Name: c.Name}
		if err := one(filepath.Dir(path), c, &r); err != nil {
			r.Error = err.Error()
		}
		out = append(out, r)
	}
	return out, nil
}

func one(dir string, c testCase, r *result) error {
	cfg, err := config.FromFile(filepath.Join(dir, c.Config))
	if err != nil {
		return err
	}
	rules := cfg.Rules
	if c.API == "external" {
		rules = cfg.ExternalRules
	}
	namers, err := naming.NamersFromConfig(rules, mapper())
	if err != nil {
		return err
	}
	namer := namers[c.Rule]
	series := prom.Series{Name: c.Series}
	r.Kept = len(namer.FilterSeries([]prom.Series{series})) == 1
	if r.Kept {
		if r.Metric, err = namer.MetricNameForSeries(series); err != nil {
			return err
		}
	}
	sel, err := labels.Parse(c.Selector)
	if err != nil {
		return err
	}
	var q prom.Selector
	if c.API == "external" {
		q, err = namer.QueryForExternalSeries(c.Series, c.Namespace, sel)
	} else {
		gr := schema.GroupResource{Group: c.Group, Resource: c.Resource}
		q, err = namer.QueryForSeries(c.Series, gr, c.Namespace, sel, c.Object)
	}
	r.Query = string(q)
	return err
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: adapter-oracle CASES.json")
		os.Exit(2)
	}
	out, err := run(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	_ = enc.Encode(out)
}
