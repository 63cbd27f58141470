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

{{- define "kmb.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kmb.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The DNS name kube-apiserver's aggregator verifies: <service>.<namespace>.svc */}}
{{- define "kmb.serviceDNS" -}}
{{- printf "%s.%s.svc" (include "kmb.fullname" .) .Release.Namespace -}}
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
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- $data := dict -}}
{{- if and $existing $existing.data (hasKey $existing.data "ca.crt") (hasKey $existing.data "tls.crt") (hasKey $existing.data "tls.key") -}}
{{- $data = dict "caCrt" (index $existing.data "ca.crt") "tlsCrt" (index $existing.data "tls.crt") "tlsKey" (index $existing.data "tls.key") -}}
{{- else -}}
{{- $days := int .Values.certificates.generate.validityDays -}}
{{- $svc := include "kmb.fullname" . -}}
{{- $ns := .Release.Namespace -}}
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
