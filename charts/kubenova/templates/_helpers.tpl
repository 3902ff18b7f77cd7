{{/* The release's name prefix for every object: "kubenova" for a release called kubenova. */}}
{{- define "kubenova.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubenova.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubenova.labels" -}}
{{ include "kubenova.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* image: call with (dict "root" $ "image" .Values.controller.image) */}}
{{- define "kubenova.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "kubenova.webhookService" -}}
{{- printf "%s-webhook" (include "kubenova.fullname" .) -}}
{{- end -}}

{{- define "kubenova.transferKeySecret" -}}
{{- printf "%s-transfer-key" (include "kubenova.fullname" .) -}}
{{- end -}}

{{- define "kubenova.transferCA" -}}
{{- printf "%s-transfer-ca" (include "kubenova.fullname" .) -}}
{{- end -}}

{{- define "kubenova.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "kubenova.fullname" .) -}}
{{- end -}}

{{/* The webhook handler's path on the controller (kubenova.controller.app.WEBHOOK_ID). */}}
{{- define "kubenova.webhookPath" -}}/validate-instance{{- end -}}

{{/* Settings both components read (kubenova/settings.py common_from_env). */}}
{{- define "kubenova.commonEnv" -}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: KUBENOVA_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: KUBENOVA_METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
{{- end -}}

{{- define "kubenova.probes" -}}
readinessProbe:
  httpGet: {path: /readyz, port: metrics}
  periodSeconds: 10
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  initialDelaySeconds: 15
  periodSeconds: 20
  failureThreshold: 3
{{- end -}}
