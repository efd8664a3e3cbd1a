{{/*
Names. With the release name "lambda-rollouts" every object has the name the kustomize base
deploy/ gives it: lambda-rollouts, and lambda-rollouts-metrics for the Service.
*/}}
{{- define "lambda-rollouts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lambda-rollouts.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lambda-rollouts.metricsServiceName" -}}
{{- printf "%s-metrics" (include "lambda-rollouts.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/*
The ClusterKopfPeering through which the replicas elect the active one (`run --peering`), and the
only one the ClusterRole lets them patch.
*/}}
{{- define "lambda-rollouts.peeringName" -}}
{{- include "lambda-rollouts.fullname" . }}
{{- end }}

{{/*
The ConfigMap of a settings file ("tenancy" or "notifications"): the user's existingConfigMap, else
the chart's own, "<fullname>-<part>". Called with (list $ "<part>").
*/}}
{{- define "lambda-rollouts.settingsConfigMapName" -}}
{{- $root := index . 0 }}
{{- $part := index . 1 }}
{{- $values := index $root.Values $part }}
{{- if $values.existingConfigMap }}
{{- $values.existingConfigMap }}
{{- else }}
{{- printf "%s-%s" (include "lambda-rollouts.fullname" $root | trunc (int (sub 62 (len $part))) | trimSuffix "-") $part }}
{{- end }}
{{- end }}

{{/*
The key of that ConfigMap that holds the file: existingConfigMapKey, else "<part>.yaml".
*/}}
{{- define "lambda-rollouts.settingsConfigMapKey" -}}
{{- $part := index . 1 }}
{{- $values := index (index . 0).Values $part }}
{{- if $values.existingConfigMap }}{{ $values.existingConfigMapKey }}{{ else }}{{ $part }}.yaml{{ end }}
{{- end }}

{{- define "lambda-rollouts.tenancyEnabled" -}}
{{- if and .Values.tenancy.policies .Values.tenancy.existingConfigMap }}
{{- fail "tenancy: set either tenancy.policies or tenancy.existingConfigMap, not both" }}
{{- end }}
{{- if or .Values.tenancy.policies .Values.tenancy.existingConfigMap }}true{{ end }}
{{- end }}

{{- define "lambda-rollouts.notificationsEnabled" -}}
{{- if and .Values.notifications.defaults .Values.notifications.existingConfigMap }}
{{- fail "notifications: set either notifications.defaults or notifications.existingConfigMap, not both" }}
{{- end }}
{{- if or .Values.notifications.defaults .Values.notifications.existingConfigMap }}true{{ end }}
{{- end }}

{{/*
Labels on every object: the kustomize base's app.kubernetes.io/name, plus Helm's standard ones.
*/}}
{{- define "lambda-rollouts.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "lambda-rollouts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The operator's pods: the Deployment's selector, the Service's and the spread constraint's.
*/}}
{{- define "lambda-rollouts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lambda-rollouts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "lambda-rollouts.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
