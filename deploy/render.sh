#!/usr/bin/env bash
# Renders what deploy/ ships, as multi-document YAML on stdout, without a cluster.
#
#   deploy/render.sh kustomize   the kustomize base through deploy/install.sh --print
#                                (a generated certificate Secret and the real caBundle)
#   deploy/render.sh base        the bare kustomize base (placeholder caBundle, no Secret)
#   deploy/render.sh helm        the Helm chart with its default values (and an image.repository)
#   deploy/render.sh helm-test   the Helm chart with ci/test-values.yaml
#   deploy/render.sh helm -- --set certificates.mode=certManager   extra args go to helm
#   deploy/render.sh all         kustomize, helm and helm-test, one after another (default)
#   deploy/render.sh helm-path   build helm if needed and print its path
#
# Helm is not packaged by Debian; it is built once from its official sources through the Go
# module proxy (needs Go: HELM_GO, else go on PATH, else /usr/local/go/bin/go) into
# ${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge/tools/helm-<version>/helm.
# HELM overrides the helm binary. The release is named kube-metrics-bridge in namespace
# custom-metrics, as the kustomize base is.
# The chart has no default image.repository (no image is published): the helm flavours set
# it to KMB_IMAGE_REPOSITORY, default localhost/kube-metrics-bridge, the name hack/image.sh
# gives the image it builds (helm-test takes ci/test-values.yaml's); a
# --set image.repository=... after -- wins.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chart="$here/chart/kube-metrics-bridge"
kubectl="${KUBECTL:-kubectl}"
helm_version=v3.22.0
# Kubernetes version Helm assumes when rendering without a cluster (.Capabilities.KubeVersion,
# kubeVersion checks): that of the client-go Helm $helm_version is built with, as Helm's own
# Makefile sets it.
helm_kube_minor=37
tools="${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge/tools"

helm_bin() {
  if [ -n "${HELM:-}" ]; then echo "$HELM"; return; fi
  local dir="$tools/helm-$helm_version"
  if [ ! -x "$dir/helm" ]; then
    local go="${HELM_GO:-}"
    if [ -z "$go" ]; then go="$(command -v go || echo /usr/local/go/bin/go)"; fi
    echo "render.sh: building helm $helm_version into $dir (once)" >&2
    mkdir -p "$dir"
    local x="-X helm.sh/helm/v3"
    (cd "$dir" && CGO_ENABLED=0 GOBIN="$dir" GOFLAGS="-buildvcs=false -trimpath" "$go" install \
      -ldflags "-s -w $x/internal/version.version=$helm_version \
        $x/pkg/chartutil.k8sVersionMajor=1 $x/pkg/chartutil.k8sVersionMinor=$helm_kube_minor \
        $x/pkg/lint/rules.k8sVersionMajor=1 $x/pkg/lint/rules.k8sVersionMinor=$helm_kube_minor" \
      "helm.sh/helm/v3/cmd/helm@$helm_version") >&2
  fi
  echo "$dir/helm"
}

helm_template() {
  "$(helm_bin)" template kube-metrics-bridge "$chart" --namespace custom-metrics "$@"
}
default_image=(--set "image.repository=${KMB_IMAGE_REPOSITORY:-localhost/kube-metrics-bridge}")

what="${1:-all}"
[ $# -eq 0 ] || shift
[ "${1:-}" != "--" ] || shift
case "$what" in
  kustomize) "$here/install.sh" --print ;;
  base) "$kubectl" kustomize "$here/kustomize/base" ;;
  helm) helm_template "${default_image[@]}" "$@" ;;
  helm-test) helm_template --values "$chart/ci/test-values.yaml" "$@" ;;
  helm-path) helm_bin ;;
  all)
    "$here/install.sh" --print
    echo "---"
    helm_template "${default_image[@]}"
    echo "---"
    helm_template --values "$chart/ci/test-values.yaml"
    ;;
  *) echo "render.sh: unknown flavour $what (kustomize, base, helm, helm-test, all, helm-path)" >&2; exit 2 ;;
esac
