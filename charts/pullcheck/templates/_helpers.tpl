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
{{- $node := dict }}
{{- if include "pullcheck.containerdHostsConfigMap" . }}
{{- $_ := set $node "containerdHostsDir" "/etc/pullcheck/node/containerd-certs.d" }}
{{- end }}
{{- if include "pullcheck.crioRegistriesConfigMap" . }}
{{- $_ := set $node "crioRegistriesConf" "/etc/pullcheck/node/crio/registries.conf" }}
{{- end }}
{{- if $node }}
{{- $_ := set $policy "nodeConfig" $node }}
{{- end }}
{{- toYaml $policy }}
{{- end }}

{{/* The certificate hooks' ServiceAccount and rights: made before either Job, removed after. */}}
{{- define "pullcheck.certsHookAnnotations" -}}
helm.sh/hook: pre-install,pre-upgrade,post-install,post-upgrade
helm.sh/hook-weight: "-10"
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end }}

{{/* One webhook's fields after its name, the same for validation and pinning but for the path
(/validate, /mutate) and failurePolicy: the same selectors, certificates and Service. With webhook.url
the path replaces a trailing /validate of the URL. Called with (dict "root" $ "path" "/validate"). */}}
{{- define "pullcheck.webhookFields" -}}
{{- $path := .path }}
{{- with .root }}
{{- $fullname := include "pullcheck.fullname" . }}
{{- $selector := .Values.webhook.namespaceSelector }}
{{- $url := printf "%s%s" (trimSuffix "/validate" .Values.webhook.url) $path -}}
admissionReviewVersions: [v1]
sideEffects: None
timeoutSeconds: {{ .Values.webhook.timeoutSeconds }}
matchPolicy: Equivalent
clientConfig:
  {{- if .Values.webhook.url }}
  url: {{ $url | quote }}
  {{- else }}
  service:
    name: {{ $fullname }}
    namespace: {{ .Release.Namespace }}
    path: {{ $path }}
    port: {{ .Values.service.port }}
  {{- end }}
  {{- if and .Values.webhook.caBundle (or .Values.webhook.url (eq .Values.certificates.method "secret")) }}
  caBundle: {{ .Values.webhook.caBundle | quote }}
  {{- end }}
namespaceSelector:
  {{- with $selector.matchLabels }}
  matchLabels:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  matchExpressions:
    # The control plane's own namespace and the webhook's are never judged: a broken image there
    # must not be able to lock the webhook out of its own repair.
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- toYaml (uniq (concat (list "kube-system" .Release.Namespace) .Values.webhook.excludeNamespaces)) | nindent 8 }}
    - key: {{ .Values.webhook.optOutLabel }}
      operator: NotIn
      values: ["true"]
    {{- with $selector.matchExpressions }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- with .Values.webhook.objectSelector }}
objectSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .Values.webhook.skipMirrorPods }}
matchConditions:
  - name: skip-mirror-pods
    expression: >-
      !has(object.metadata.annotations) ||
      !('kubernetes.io/config.mirror' in object.metadata.annotations)
{{- end }}
rules:
  - apiGroups: [""]
    apiVersions: [v1]
    operations: [CREATE, UPDATE]
    resources: [pods, pods/ephemeralcontainers]
    scope: Namespaced
  {{- if .Values.webhook.workloads }}
  - apiGroups: [""]
    apiVersions: [v1]
    operations: [CREATE, UPDATE]
    resources: [replicationcontrollers]
    scope: Namespaced
  - apiGroups: [apps]
    apiVersions: [v1]
    operations: [CREATE, UPDATE]
    resources: [deployments, replicasets, statefulsets, daemonsets]
    scope: Namespaced
  - apiGroups: [batch]
    apiVersions: [v1]
    operations: [CREATE, UPDATE]
    resources: [jobs, cronjobs]
    scope: Namespaced
  {{- end }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding the nodes' containerd hosts.toml files, '' when none is configured. */}}
{{- define "pullcheck.containerdHostsConfigMap" -}}
{{- if .Values.nodeConfig.containerdHosts -}}
{{ include "pullcheck.fullname" . }}-containerd-hosts
{{- end }}
{{- end }}

{{/* The ConfigMap holding the nodes' CRI-O registries.conf, '' when none is configured. */}}
{{- define "pullcheck.crioRegistriesConfigMap" -}}
{{- if .Values.nodeConfig.crioRegistriesConfigMap -}}
{{ .Values.nodeConfig.crioRegistriesConfigMap }}
{{- else if .Values.nodeConfig.crioRegistriesConf -}}
{{ include "pullcheck.fullname" . }}-crio-registries
{{- end }}
{{- end }}
