#!/usr/bin/env bash
# Installs (or upgrades) kube-metrics-bridge from the kustomize base in namespace
# custom-metrics, with a serving certificate and a matching APIService caBundle.
#
#   deploy/install.sh                       apply to the current kubectl context
#   deploy/install.sh -- --dry-run=server   extra arguments go to `kubectl apply`
#   deploy/install.sh --print               print the manifests (Secret included), no cluster
#   deploy/install.sh --renew               new CA and serving pair (old CA stays trusted)
#   deploy/install.sh --cert-dir DIR        use/keep ca.crt, tls.crt, tls.key in DIR
#
# Certificates come from, in order: --cert-dir when it holds ca.crt, tls.crt and tls.key
# (bring your own); the Secret kube-metrics-bridge-tls already in the cluster (so re-running
# never rotates anything); else a new CA and a serving certificate for
# kube-metrics-bridge.custom-metrics.svc made here with openssl. They are applied as Secret
# kube-metrics-bridge-tls (tls.crt, tls.key, ca.crt) and ca.crt becomes the caBundle of the
# three APIServices, through a throwaway kustomize overlay on deploy/kustomize/base.
#
# Needs kubectl (with its built-in kustomize) and openssl. KUBECTL overrides the kubectl binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
base="$here/kustomize/base"
kubectl="${KUBECTL:-kubectl}"
namespace=custom-metrics
service=kube-metrics-bridge
secret=kube-metrics-bridge-tls
days="${KMB_CERT_DAYS:-3650}"

print=false
renew=false
cert_dir=""
apply_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --print) print=true ;;
    --renew) renew=true ;;
    --cert-dir) cert_dir="$2"; shift ;;
    --cert-dir=*) cert_dir="${1#*=}" ;;
    --days) days="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; apply_args=("$@"); break ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
keep="$cert_dir"
[ -n "$cert_dir" ] || cert_dir="$work/certs"
mkdir -p "$cert_dir"
chmod 700 "$cert_dir"

have_files() { [ -s "$cert_dir/ca.crt" ] && [ -s "$cert_dir/tls.crt" ] && [ -s "$cert_dir/tls.key" ]; }

# The Secret already in the cluster, if any (not with --print: no cluster needed then).
if ! have_files && ! $print; then
  if "$kubectl" -n "$namespace" get secret "$secret" -o name >/dev/null 2>&1; then
    for key in ca.crt tls.crt tls.key; do
      "$kubectl" -n "$namespace" get secret "$secret" \
        -o "go-template={{index .data \"$key\" | base64decode}}" >"$cert_dir/$key"
    done
    echo "install.sh: reusing the certificate in Secret $namespace/$secret" >&2
  fi
fi

if $renew || ! have_files; then
  old_ca=""
  if [ -s "$cert_dir/ca.crt" ]; then
    # Keep trusting the newest previous CA, so pods still serving the old pair (the kubelet
    # updates Secret volumes within about a minute) stay reachable during the switch.
    old_ca="$(awk '/BEGIN CERTIFICATE/{n++} n==1' "$cert_dir/ca.crt")"
  fi
  dns="$service.$namespace.svc"
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
    -subj "/CN=kube-metrics-bridge-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=$dns" \
    -keyout "$cert_dir/tls.key" -out "$work/tls.csr" 2>/dev/null
  printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=DNS:$service,DNS:$service.$namespace,DNS:$dns,DNS:$dns.cluster.local" \
    >"$work/tls.ext"
  openssl x509 -req -sha256 -days "$days" -in "$work/tls.csr" \
    -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -extfile "$work/tls.ext" -out "$cert_dir/tls.crt" 2>/dev/null
  { cat "$work/ca.pem"; [ -z "$old_ca" ] || printf '%s\n' "$old_ca"; } >"$cert_dir/ca.crt"
  # The CA key is not kept: renewing makes a new CA (see --renew).
  echo "install.sh: generated a CA and a serving certificate for $dns${keep:+ in $keep}" >&2
fi

if ! openssl verify -CAfile "$cert_dir/ca.crt" "$cert_dir/tls.crt" >/dev/null 2>&1; then
  echo "install.sh: $cert_dir/tls.crt does not verify against $cert_dir/ca.crt" >&2
  exit 1
fi

# The overlay: the base, the Secret, and the Secret's ca.crt copied into every caBundle.
overlay="$work/overlay"
mkdir -p "$overlay"
cp "$cert_dir/ca.crt" "$cert_dir/tls.crt" "$cert_dir/tls.key" "$overlay/"
cat >"$overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$overlay" "$base")
secretGenerator:
  - name: $secret
    namespace: $namespace
    type: kubernetes.io/tls
    files: [tls.crt, tls.key, ca.crt]
    options:
      disableNameSuffixHash: true
      labels:
        app.kubernetes.io/name: kube-metrics-bridge
replacements:
  - source:
      kind: Secret
      name: $secret
      fieldPath: data.[ca.crt]
    targets:
      - select:
          kind: APIService
        fieldPaths: [spec.caBundle]
YAML

if $print; then
  "$kubectl" kustomize "$overlay"
else
  "$kubectl" kustomize "$overlay" |
    "$kubectl" apply --server-side --field-manager=kube-metrics-bridge-install "${apply_args[@]}" -f -
fi
