{{- define "kmb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kmb.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kmb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kmb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kmb.labels" -}}
{{ include "kmb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of the `helm test` objects: not the bridge's selector, so no Service, PDB or
NetworkPolicy of the release selects the test pod. */}}
{{- define "kmb.testLabels" -}}
app.kubernetes.io/name: {{ include "kmb.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "kmb.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kmb.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Where every namespaced object goes: namespaceOverride, else the release's namespace. */}}
{{- define "kmb.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
An object's metadata.annotations: commonAnnotations plus the object's own (dict "root" $ "extra"
map); the object's own win on a clash. Renders nothing when both are empty.
*/}}
{{- define "kmb.annotations" -}}
{{- $all := merge (dict) (.extra | default dict) (.root.Values.commonAnnotations | default dict) -}}
{{- with $all -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/*
The image reference. A repository without a registry host would make nodes try Docker Hub,
where no image is published: fail the render with what to do instead of an ImagePullBackOff.
*/}}
{{- define "kmb.image" -}}
{{- $repo := .Values.image.repository | default "" -}}
{{- $first := regexReplaceAll "/.*$" $repo "" -}}
{{- $hasRegistry := and (contains "/" $repo) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- if not $hasRegistry -}}
{{- $what := ternary "image.repository is required" (printf "image.repository %q names no registry" $repo) (eq $repo "") -}}
{{- fail (printf "%s, and no public image of kube-metrics-bridge is published: nodes would fail to pull it (ImagePullBackOff). Build the image with hack/image.sh (it writes a docker-archive and prints its path), push it to a registry your nodes pull from (docker load -i ARCHIVE and docker push, or skopeo copy docker-archive:ARCHIVE docker://REGISTRY/kube-metrics-bridge:%s), then set image.repository=REGISTRY/kube-metrics-bridge (a host with a '.' or ':' first, or localhost/ for an image loaded into the nodes, e.g. kind load image-archive ARCHIVE). See deploy/README.md, \"The image in a cluster\"" $what (.Values.image.tag | default .Chart.AppVersion)) -}}
{{- end -}}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The custom and external APIServices this release registers, comma-separated. */}}
{{- define "kmb.apiServiceNames" -}}
{{- $names := list -}}
{{- if .Values.apiServices.custom }}{{ $names = append $names "v1beta2.custom.metrics.k8s.io" }}{{ $names = append $names "v1beta1.custom.metrics.k8s.io" }}{{ end -}}
{{- if .Values.apiServices.external }}{{ $names = append $names "v1beta1.external.metrics.k8s.io" }}{{ end -}}
{{- join "," $names -}}
{{- end -}}

{{/* The DNS name kube-apiserver's aggregator verifies: <service>.<namespace>.svc */}}
{{- define "kmb.serviceDNS" -}}
{{- printf "%s.%s.svc" (include "kmb.fullname" .) (include "kmb.namespace" .) -}}
{{- end -}}

{{- define "kmb.tlsSecretName" -}}
{{- if eq .Values.certificates.mode "provided" -}}
{{- required "certificates.provided.secretName is required in provided mode" .Values.certificates.provided.secretName -}}
{{- else -}}
{{- printf "%s-tls" (include "kmb.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "kmb.validateMode" -}}
{{- $mode := .Values.certificates.mode -}}
{{- if not (has $mode (list "generate" "certManager" "provided")) -}}
{{- fail (printf "certificates.mode must be generate, certManager or provided, not %q" $mode) -}}
{{- end -}}
{{- end -}}

{{/*
The generated CA and serving pair (mode generate), made once per render and shared by the
Secret and the APIServices: reused from the Secret in the cluster when it exists and holds all
three keys (so `helm upgrade` keeps it), else new from genCA/genSignedCert.
Returns a dict with base64 values caCrt, tlsCrt, tlsKey, as YAML.
*/}}
{{- define "kmb.generatedTLS" -}}
{{- if not (hasKey .Values "__generatedTLS") -}}
{{- $name := include "kmb.tlsSecretName" . -}}
{{- $existing := lookup "v1" "Secret" (include "kmb.namespace" .) $name -}}
{{- $data := dict -}}
{{- if and $existing $existing.data (hasKey $existing.data "ca.crt") (hasKey $existing.data "tls.crt") (hasKey $existing.data "tls.key") -}}
{{- $data = dict "caCrt" (index $existing.data "ca.crt") "tlsCrt" (index $existing.data "tls.crt") "tlsKey" (index $existing.data "tls.key") -}}
{{- else -}}
{{- $days := int .Values.certificates.generate.validityDays -}}
{{- $svc := include "kmb.fullname" . -}}
{{- $ns := include "kmb.namespace" . -}}
{{- $dns := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- $ca := genCA (printf "%s-ca" $svc) $days -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc $ns) nil $dns $days $ca -}}
{{- $data = dict "caCrt" ($ca.Cert | b64enc) "tlsCrt" ($cert.Cert | b64enc) "tlsKey" ($cert.Key | b64enc) -}}
{{- end -}}
{{- $_ := set .Values "__generatedTLS" $data -}}
{{- end -}}
{{- toYaml (get .Values "__generatedTLS") -}}
{{- end -}}

{{/* The caBundle of the APIServices (empty in certManager mode: cainjector fills it). */}}
{{- define "kmb.caBundle" -}}
{{- if eq .Values.certificates.mode "generate" -}}
{{- (include "kmb.generatedTLS" . | fromYaml).caCrt -}}
{{- else if eq .Values.certificates.mode "provided" -}}
{{- required "certificates.provided.caBundle (base64 PEM CA) is required in provided mode" .Values.certificates.provided.caBundle -}}
{{- end -}}
{{- end -}}

{{- define "kmb.promAuthDir" -}}/var/run/secrets/kube-metrics-bridge/prometheus{{- end -}}

{{/* Where each upstream's CA Secret is mounted (one directory per upstream name). */}}
{{- define "kmb.upstreamsDir" -}}/var/run/secrets/kube-metrics-bridge/upstreams{{- end -}}

{{/* Where the front-proxy client certificate for upstreams is mounted. */}}
{{- define "kmb.upstreamClientDir" -}}/var/run/secrets/kube-metrics-bridge/upstream-client{{- end -}}
