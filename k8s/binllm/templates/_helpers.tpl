{{/* Names, labels and the cross-component values every template shares. */}}

{{- define "binllm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name prefix, <= 42 chars: "-redis-headless" must fit in 63, and the StatefulSet name plus "-" and an 10-char revision hash too. */}}
{{- define "binllm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 42 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 42 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 42 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "binllm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource; pass (dict "ctx" $ "component" "api"). */}}
{{- define "binllm.labels" -}}
helm.sh/chart: {{ include "binllm.chart" .ctx }}
{{ include "binllm.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: binllm
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels; the component label is what NetworkPolicies select on. */}}
{{- define "binllm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "binllm.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "binllm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "binllm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, the tag defaulting to the chart appVersion; pass (dict "image" .Values.api.image "ctx" $). */}}
{{- define "binllm.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{- define "binllm.secretName" -}}
{{- default (include "binllm.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{- define "binllm.artifactsClaim" -}}
{{- default (printf "%s-artifacts" (include "binllm.fullname" .)) .Values.artifacts.existingClaim }}
{{- end }}

{{/* True when some pod mounts the artifacts volume. */}}
{{- define "binllm.artifactsUsed" -}}
{{- if or .Values.vllm.enabled .Values.publishJob.enabled (eq .Values.api.backend "local") }}true{{ end }}
{{- end }}

{{- define "binllm.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s-redis:6379/0" (include "binllm.fullname" .) }}
{{- else }}
{{- .Values.redis.external.url }}
{{- end }}
{{- end }}

{{- define "binllm.vllmUrl" -}}
{{- if eq .Values.api.settings.vllmRouting "userHash" }}
{{- /* the pods' own port: the headless name resolves to pod addresses, not to the Service port */}}
{{- printf "http://%s-vllm-headless:8000" (include "binllm.fullname" .) }}
{{- else }}
{{- printf "http://%s-vllm:%v" (include "binllm.fullname" .) .Values.vllm.service.port }}
{{- end }}
{{- end }}

{{/* Settings the chart refuses at render time instead of letting the API crash-loop on them. */}}
{{- define "binllm.validate" -}}
{{- if and (eq .Values.api.backend "vllm") (not .Values.vllm.enabled) }}
{{- fail "api.backend=vllm needs vllm.enabled=true (or set api.backend=local for the CPU mode)" }}
{{- end }}
{{- if and (not .Values.redis.enabled) (not .Values.redis.external.url) (not .Values.secret.existingSecret) }}
{{- fail "redis.enabled=false needs redis.external.url or secret.existingSecret with BINLLM_REDIS_URL" }}
{{- end }}
{{- if and (eq .Values.api.settings.vllmRouting "userHash") (not .Values.vllm.headlessService.enabled) }}
{{- fail "api.settings.vllmRouting=userHash needs vllm.headlessService.enabled=true (or vllmRouting=service)" }}
{{- end }}
{{- if and .Values.redis.enabled .Values.redis.external.cluster }}
{{- fail "redis.external.cluster=true points at an external Redis Cluster: set redis.enabled=false" }}
{{- end }}
{{- range .Values.api.extraEnv }}
{{- if and (eq .name "BINLLM_API_KEYS") (not .valueFrom) (not (.value | default "" | replace "," "" | trim)) }}
{{- fail "api.extraEnv sets BINLLM_API_KEYS to no key, which the API refuses (it would mean no authentication): give keys, or leave it out (secret.apiKeys: [] = no auth)" }}
{{- end }}
{{- end }}
{{- range .Values.secret.apiKeys }}
{{- if not (. | replace "," "" | trim) }}
{{- fail "secret.apiKeys holds an empty key: list keys, or leave it [] for no auth" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The writable scratch volumes of a read-only-root container. */}}
{{- define "binllm.tmpVolumes" -}}
- name: tmp
  emptyDir: {}
- name: prometheus-multiproc
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
{{- end }}
