{{/*
The prefix of every object: fullnameOverride, else the release name when it
contains the chart name (the default release "logship" gives "logship"),
else RELEASE-CHART.
*/}}
{{- define "logship.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "logship.fullname" -}}
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

{{/* PREFIX-agent: the DaemonSet, its ConfigMap, ServiceAccount, Service and ClusterRole. */}}
{{- define "logship.agent.fullname" -}}
{{- printf "%s-agent" (include "logship.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* PREFIX-aggregator: the StatefulSet, its headless Service (the agents' DNS name), ConfigMap, ServiceAccount and PDB. */}}
{{- define "logship.aggregator.fullname" -}}
{{- printf "%s-aggregator" (include "logship.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "logship.sharedKey.secretName" -}}
{{- .Values.sharedKey.existingSecret | default (printf "%s-shared-key" (include "logship.fullname" .)) }}
{{- end }}

{{- define "logship.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "logship.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Labels on every object; "logship.selectorLabels" with a component ("agent", "aggregator") selects its pods. */}}
{{- define "logship.labels" -}}
helm.sh/chart: {{ include "logship.chart" . }}
app.kubernetes.io/name: {{ include "logship.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "logship.selectorLabels" -}}
app.kubernetes.io/name: {{ include "logship.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The aggregators' headless Service as the agents resolve it: NAME.NAMESPACE.svc.DOMAIN:PORT. */}}
{{- define "logship.aggregator.address" -}}
{{- printf "%s.%s.svc.%s:%d" (include "logship.aggregator.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.aggregator.forwardPort) }}
{{- end }}

{{/* The LOGSHIP_SHARED_KEY variable from the shared-key Secret. */}}
{{- define "logship.sharedKey.env" -}}
- name: LOGSHIP_SHARED_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "logship.sharedKey.secretName" . }}
      key: {{ .Values.sharedKey.secretKey }}
{{- end }}

{{/* Prometheus scrape annotations for a pod serving /metrics on port. */}}
{{- define "logship.metricsAnnotations" -}}
{{- if .root.Values.metrics.podAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}
