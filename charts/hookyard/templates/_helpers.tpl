{{- define "hookyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hookyard.fullname" -}}
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

{{- define "hookyard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "hookyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hookyard
{{- end }}

{{- /* The operator's pods; receivers and dispatchers carry app.kubernetes.io/name=hookyard and their component. */}}
{{- define "hookyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hookyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "hookyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hookyard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hookyard.imageRef" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{- define "hookyard.image" -}}
{{- include "hookyard.imageRef" (dict "root" . "image" .Values.image) }}
{{- end }}

{{- /* The receivers' and dispatchers' image: each empty field of workloads.image falls back to image. */}}
{{- define "hookyard.workloadImage" -}}
{{- $w := .Values.workloads.image }}
{{- if or $w.repository $w.tag $w.digest }}
{{- $image := dict "repository" (default .Values.image.repository $w.repository) "tag" (default .Values.image.tag $w.tag) "digest" $w.digest }}
{{- include "hookyard.imageRef" (dict "root" . "image" $image) }}
{{- else }}
{{- include "hookyard.image" . }}
{{- end }}
{{- end }}

{{- define "hookyard.webhookServiceName" -}}
{{- printf "%s-webhook" (include "hookyard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hookyard.webhookCertSecret" -}}
{{- printf "%s-webhook-cert" (include "hookyard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* The namespaceSelector of the admission webhook and the PodMonitors' namespaces. */}}
{{- define "hookyard.webhookNamespaceSelector" -}}
{{- if .Values.webhook.namespaceSelector }}
{{- toYaml .Values.webhook.namespaceSelector }}
{{- else }}
{{- include "hookyard.watchedNamespaceSelector" . }}
{{- end }}
{{- end }}

{{- /* The namespaces the operator reconciles (watchNamespaces), or every namespace. */}}
{{- define "hookyard.watchedNamespaceSelector" -}}
{{- if .Values.watchNamespaces -}}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: In
    values:
      {{- toYaml .Values.watchNamespaces | nindent 6 }}
{{- else -}}
{}
{{- end }}
{{- end }}

{{- define "hookyard.podMonitorNamespaces" -}}
{{- if .Values.watchNamespaces }}
matchNames:
  {{- toYaml .Values.watchNamespaces | nindent 2 }}
{{- else }}
any: true
{{- end }}
{{- end }}
