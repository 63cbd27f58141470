// Command protobuf-golden checks kube-metrics-bridge's Kubernetes protobuf against the real Go
// types of k8s.io/metrics and k8s.io/apimachinery (the versions go.mod pins). It is run by
// the Rust test integration/protobuf.rs and built by build.sh.
//
// Usage: protobuf-golden DIR
//
// DIR/cases.json lists the cases: {"name", "apiVersion", "kind", "expect"}; each has
// DIR/<name>.pb (our protobuf) and DIR/<name>.json (our JSON of the same object). For each
// case the program
//
//  1. decodes the protobuf with the universal deserializer of a codec factory over a scheme
//     holding the metrics.k8s.io (v1, v1beta1), custom.metrics.k8s.io (v1beta1, v1beta2) and
//     external.metrics.k8s.io types, and checks the envelope's kind;
//  2. decodes it again with the protobuf serializer into a typed object;
//  3. decodes the JSON with the universal deserializer;
//  4. requires the three objects to be equal (apimachinery's semantic equality), and for
//     custom metrics also the objects the custom metrics client's converter makes of both;
//  5. re-encodes the objects from (1) and (3) with Go's protobuf serializer and requires the
//     bytes to equal ours.
//
// "expect": "bytes-differ" marks a case built to fail step 5 only (our bytes with a field
// left out that Go always writes): it passes when decoding and equality hold and only the
// bytes differ, which shows step 5 can fail.
//
// Every failure is printed with a diff; the exit status is 1 if any case failed.
package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/util/diff"
	cmv1beta1 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta1"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"
	emv1beta1 "k8s.io/metrics/pkg/apis/external_metrics/v1beta1"
	metricsv1 "k8s.io/metrics/pkg/apis/metrics/v1"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"
	custommetrics "k8s.io/metrics/pkg/client/custom_metrics"
)

type testCase struct {
	Name       string `json:"name"`
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Expect     string `json:"expect"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: protobuf-golden DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	manifest, err := os.ReadFile(filepath.Join(dir, "cases.json"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var cases []testCase
	if err := json.Unmarshal(manifest, &cases); err != nil {
		fmt.Fprintf(os.Stderr, "cases.json: %v\n", err)
		os.Exit(2)
	}
	if len(cases) == 0 {
		fmt.Fprintln(os.Stderr, "cases.json lists no case")
		os.Exit(2)
	}

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		metricsv1.AddToScheme,
		metricsv1beta1.AddToScheme,
		cmv1beta1.AddToScheme,
		cmv1beta2.AddToScheme,
		emv1beta1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	c := checker{
		scheme:    scheme,
		codecs:    serializer.NewCodecFactory(scheme),
		proto:     protobuf.NewSerializer(scheme, scheme),
		converter: custommetrics.NewMetricConverter(),
	}

	failed := 0
	for _, tc := range cases {
		problems := c.check(dir, tc)
		passed := len(problems) == 0
		if tc.Expect == "bytes-differ" {
			passed = len(problems) > 0
			for _, p := range problems {
				passed = passed && strings.HasPrefix(p, "bytes differ")
			}
			if !passed {
				problems = append(problems, "expected byte differences and nothing else (step 5 must be able to fail)")
			}
		}
		if passed {
			fmt.Printf("ok   %s (%s %s)\n", tc.Name, tc.APIVersion, tc.Kind)
			continue
		}
		failed++
		fmt.Printf("FAIL %s (%s %s)\n", tc.Name, tc.APIVersion, tc.Kind)
		for _, p := range problems {
			fmt.Printf("  %s\n", strings.ReplaceAll(p, "\n", "\n  "))
		}
	}
	fmt.Printf("%d passed, %d failed\n", len(cases)-failed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}

type checker struct {
	scheme    *runtime.Scheme
	codecs    serializer.CodecFactory
	proto     *protobuf.Serializer
	converter *custommetrics.MetricConverter
}

// check returns what is wrong with one case, nothing if all holds.
func (c checker) check(dir string, tc testCase) []string {
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	ours, err := os.ReadFile(filepath.Join(dir, tc.Name+".pb"))
	if err != nil {
		fail("%v", err)
		return problems
	}
	ourJSON, err := os.ReadFile(filepath.Join(dir, tc.Name+".json"))
	if err != nil {
		fail("%v", err)
		return problems
	}
	want := schema.FromAPIVersionAndKind(tc.APIVersion, tc.Kind)

	// 1. The universal deserializer: the envelope's TypeMeta picks the type.
	fromProto, gvk, err := c.codecs.UniversalDeserializer().Decode(ours, nil, nil)
	if err != nil {
		fail("universal deserializer refused our protobuf: %v", err)
		return problems
	}
	if *gvk != want {
		fail("our protobuf says %v, expected %v", *gvk, want)
	}
	// 2. A typed into.
	into, err := c.scheme.New(want)
	if err != nil {
		fail("no Go type for %v: %v", want, err)
		return problems
	}
	typed, _, err := c.proto.Decode(ours, nil, into)
	if err != nil {
		fail("protobuf serializer refused our protobuf into %T: %v", into, err)
		return problems
	}
	// 3. Our JSON of the same object.
	fromJSON, gvk, err := c.codecs.UniversalDeserializer().Decode(ourJSON, nil, nil)
	if err != nil {
		fail("universal deserializer refused our JSON: %v", err)
		return problems
	}
	if *gvk != want {
		fail("our JSON says %v, expected %v", *gvk, want)
	}
	// Decoders differ in whether they keep TypeMeta; compare and encode with it set.
	for _, o := range []runtime.Object{fromProto, typed, fromJSON} {
		o.GetObjectKind().SetGroupVersionKind(want)
	}

	// 4. One object, whichever way it came.
	if !apiequality.Semantic.DeepEqual(fromProto, fromJSON) {
		fail("decoded protobuf and decoded JSON differ (- protobuf, + JSON):\n%s", diff.Diff(fromProto, fromJSON))
	}
	if !apiequality.Semantic.DeepEqual(fromProto, typed) {
		fail("universal and typed protobuf decoding differ (- universal, + typed):\n%s", diff.Diff(fromProto, typed))
	}
	if want.Group == cmv1beta2.GroupName {
		// What the custom metrics client does with an answer: decode, convert to v1beta2.
		a, errA := c.convert(ours)
		b, errB := c.convert(ourJSON)
		switch {
		case errA != nil || errB != nil:
			fail("custom metrics converter: protobuf: %v; JSON: %v", errA, errB)
		case !apiequality.Semantic.DeepEqual(a, b):
			fail("custom metrics converter results differ (- protobuf, + JSON):\n%s", diff.Diff(a, b))
		}
	}

	// 5. Go's bytes for the same object are ours.
	for _, from := range []struct {
		what string
		obj  runtime.Object
	}{{"decoded from our protobuf", fromProto}, {"decoded from our JSON", fromJSON}} {
		var buf bytes.Buffer
		if err := c.proto.Encode(from.obj, &buf); err != nil {
			fail("Go cannot encode the object %s: %v", from.what, err)
			continue
		}
		if !bytes.Equal(buf.Bytes(), ours) {
			fail("bytes differ: Go's encoding of the object %s is not ours\n%s", from.what, byteDiff(ours, buf.Bytes()))
		}
	}
	return problems
}

func (c checker) convert(data []byte) (runtime.Object, error) {
	obj, err := runtime.Decode(c.converter.Codecs().UniversalDecoder(custommetrics.MetricVersions...), data)
	if err != nil {
		return nil, err
	}
	return c.converter.UnsafeConvertToVersionVia(obj, cmv1beta2.SchemeGroupVersion)
}

// byteDiff shows where two encodings part: the offset, a window around it, and both in full.
func byteDiff(ours, gos []byte) string {
	at := 0
	for at < len(ours) && at < len(gos) && ours[at] == gos[at] {
		at++
	}
	window := func(b []byte) string {
		lo, hi := max(at-16, 0), min(at+16, len(b))
		if lo >= hi {
			return "(ends here)"
		}
		return fmt.Sprintf("%x|%x", b[lo:at], b[at:hi])
	}
	return fmt.Sprintf("first difference at byte %d (ours %d bytes, Go's %d)\n ours: ...%s...\n Go's: ...%s...\nours in full:\n%sGo's in full:\n%s",
		at, len(ours), len(gos), window(ours), window(gos), hex.Dump(ours), hex.Dump(gos))
}
