{{- define "pullcheck.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pullcheck.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "pullcheck.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pullcheck.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pullcheck.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "pullcheck.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pullcheck.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pullcheck.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pullcheck.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "pullcheck.fullname" .)) .Values.certificates.secretName }}
{{- end }}

{{- define "pullcheck.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The webhook runs in the cluster unless webhook.url sends the API server elsewhere. */}}
{{- define "pullcheck.inCluster" -}}
{{- if not .Values.webhook.url }}true{{ end }}
{{- end }}

{{- define "pullcheck.policy" -}}
{{- $policy := deepCopy .Values.policy }}
{{- if .Values.nodeCredentials.secretName }}
{{- $_ := set $policy "dockerConfig" "/etc/pullcheck/docker/.dockerconfigjson" }}
{{- end }}
{{- toYaml $policy }}
{{- end }}

{{/* The certificate hooks' ServiceAccount and rights: made before either Job, removed after. */}}
{{- define "pullcheck.certsHookAnnotations" -}}
helm.sh/hook: pre-install,pre-upgrade,post-install,post-upgrade
helm.sh/hook-weight: "-10"
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end }}
