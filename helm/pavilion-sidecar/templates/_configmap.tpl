{{/*
The ConfigMap holding the sidecar's JSON config. An including chart renders it from one
of its own templates: {{ include "pavilion-sidecar.configmap" . }}
*/}}
{{- define "pavilion-sidecar.configmap" -}}
{{- include "pavilion-sidecar.validate" . -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "pavilion-sidecar.configMapName" . }}
  labels:
    {{- include "pavilion-sidecar.labels" . | nindent 4 }}
data:
  config.json: |
    {{- include "pavilion-sidecar.config" . | nindent 4 }}
{{- end -}}
