#!/usr/bin/env bash
# Smoke test of an installed kube-metrics-bridge, in the cluster of the current kubeconfig:
# are the three APIServices Available, and does a metric come back through kube-apiserver for
# namespace `default`? Says what is wrong when not, and exits non-zero.
#
#   hack/test.sh                 first metric discovery lists, namespace default
#   hack/test.sh METRIC [NS]     a namespace metric (namespaces/NS/metrics/METRIC) or, if the
#                                metric is listed as pods/METRIC, pods/* in NS
# KUBECTL overrides the kubectl binary.
set -uo pipefail
kubectl="${KUBECTL:-kubectl}"
ns="${2:-default}"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$kubectl" version >/dev/null 2>&1 || fail "kubectl cannot reach a cluster (check KUBECONFIG / the current context)"
for svc in v1beta1.custom.metrics.k8s.io v1beta2.custom.metrics.k8s.io v1beta1.external.metrics.k8s.io; do
  cond=$("$kubectl" get apiservice "$svc" -o jsonpath='{.status.conditions[?(@.type=="Available")].status} {.status.conditions[?(@.type=="Available")].reason}: {.status.conditions[?(@.type=="Available")].message}' 2>&1) ||
    fail "APIService $svc is missing: install with hack/deploy.sh (or hack/develop.sh for a local build)"
  case "$cond" in
    True*) echo "ok: APIService $svc is Available" ;;
    *) fail "APIService $svc is not Available: ${cond#* } -- run 'kube-metrics-bridge doctor' for an explanation" ;;
  esac
done

list=$("$kubectl" get --raw /apis/custom.metrics.k8s.io/v1beta2 2>&1) || fail "discovery failed: $list"
metric="${1:-}"
if [ -z "$metric" ]; then
  metric=$(printf '%s' "$list" | tr ',' '\n' | sed -n 's/.*"name":"\(namespaces\|pods\)\/\([^"]*\)".*/\1\/\2/p' | grep -v none_discovered_yet | head -n1)
  [ -n "$metric" ] || fail "no metric discovered: check the rules' series_query against Prometheus (kube-metrics-bridge explain, doctor --config)"
fi
case "$metric" in
  */*) kind="${metric%%/*}"; metric="${metric#*/}" ;;
  *) if printf '%s' "$list" | grep -q "\"name\":\"pods/$metric\""; then kind=pods; else kind=namespaces; fi ;;
esac
if [ "$kind" = pods ]; then
  path="/apis/custom.metrics.k8s.io/v1beta2/namespaces/$ns/pods/%2A/$metric"
else
  path="/apis/custom.metrics.k8s.io/v1beta2/namespaces/$ns/metrics/$metric"
fi
answer=$("$kubectl" get --raw "$path" 2>&1) || {
  case "$answer" in
    *NotFound*|*"could not find"*) fail "GET $path: no data ($answer) -- the metric has no sample for namespace $ns; pick one with data: hack/test.sh METRIC NAMESPACE" ;;
    *Forbidden*|*forbidden*) fail "GET $path: forbidden ($answer) -- your user lacks get on custom.metrics.k8s.io" ;;
    *"unable to handle the request"*|*ServiceUnavailable*) fail "GET $path: the bridge or Prometheus is unavailable ($answer) -- see the bridge's log and doctor" ;;
    *) fail "GET $path: $answer" ;;
  esac
}
echo "ok: GET $path"
printf '%s\n' "$answer"
