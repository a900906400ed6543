{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "speechops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, unless it already holds the chart name. */}}
{{- define "speechops.fullname" -}}
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

{{- define "speechops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object the chart creates. */}}
{{- define "speechops.labels" -}}
helm.sh/chart: {{ include "speechops.chart" . }}
{{ include "speechops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: speechops
{{- end }}

{{/* Selector labels of the operator pods (immutable once installed). */}}
{{- define "speechops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "speechops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "speechops.operatorSelectorLabels" -}}
{{ include "speechops.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Worker pods are built by the operator, not by this chart; these are the labels it
     puts on them (contract/speechops_contract/names.py), used by the PodMonitor and NetworkPolicy. */}}
{{- define "speechops.workerSelectorLabels" -}}
app.kubernetes.io/managed-by: speechops
app.kubernetes.io/component: worker
{{- end }}

{{- define "speechops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "speechops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image reference: a digest pins the exact build and wins over the tag. */}}
{{- define "speechops.image" -}}
{{- $tag := default .Chart.AppVersion .image.tag }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* Namespace the Grafana dashboard ConfigMap goes to. */}}
{{- define "speechops.dashboardNamespace" -}}
{{- default .Release.Namespace .Values.monitoring.dashboards.namespace }}
{{- end }}

{{/* The Secret holding the operator's admin signing key (the chart's own, or the user's). */}}
{{- define "speechops.adminKeySecret" -}}
{{- .Values.operator.adminKey.existingSecret | default (printf "%s-admin-key" (include "speechops.fullname" .)) }}
{{- end }}
