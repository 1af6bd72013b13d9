{{- define "broker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "broker.fullname" -}}
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

{{- define "broker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "broker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "broker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.broker.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "broker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "broker.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "broker.image" -}}
{{- $img := .Values.broker.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (toString $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* The meshConfig extensionProviders entry for Pavilion (mesh-wide: printed, not applied). */}}
{{- define "broker.meshConfigSnippet" -}}
{{- $ep := .Values.istio.extensionProvider -}}
{{- $grpc := dict
      "service" (printf "%s/%s" .Release.Namespace $ep.service)
      "port" .Values.pavilion.ports.grpc.containerPort
      "timeout" $ep.timeout
      "failOpen" $ep.failOpen
      "statusOnError" (toString $ep.statusOnError) -}}
{{- if $ep.includeRequestBodyInCheck.enabled -}}
{{- $_ := set $grpc "includeRequestBodyInCheck" (dict
      "maxRequestBytes" $ep.includeRequestBodyInCheck.maxRequestBytes
      "allowPartialMessage" $ep.includeRequestBodyInCheck.allowPartialMessage
      "packAsBytes" $ep.includeRequestBodyInCheck.packAsBytes) -}}
{{- end -}}
meshConfig:
  extensionProviders:
    - name: {{ $ep.name }}
      envoyExtAuthzGrpc:
        {{- toYaml $grpc | nindent 8 }}
{{- end -}}

{{/* Cross-checks between the broker's Istio wiring and the sidecar's config. */}}
{{- define "broker.validate" -}}
{{- if and .Values.istio.enabled .Values.istio.allowedCallers.enabled (not .Values.istio.allowedCallers.principals) -}}
{{- fail "istio.allowedCallers.enabled needs istio.allowedCallers.principals (e.g. cluster.local/ns/istio-ingress/sa/istio-ingressgateway): an ALLOW policy without them refuses every request" -}}
{{- end -}}
{{- if and (dig "persistentVolumeClaim" "claimName" "" (.Values.pavilion.dataVolume.volume | default dict)) (gt (int .Values.broker.replicas) 1) -}}
{{- fail (printf "pavilion.dataVolume.volume.persistentVolumeClaim is one claim for all %v replicas: their sidecars would share one audit log. Use pavilion.dataVolume.volume.ephemeral (a claim per pod) or broker.replicas 1" .Values.broker.replicas) -}}
{{- end -}}
{{- if and .Values.istio.enabled .Values.istio.authorizationPolicy.enabled -}}
{{- $ea := .Values.pavilion.config.extAuthz -}}
{{- if or (not $ea) (eq (toString (dig "grpc" "enabled" true $ea)) "false") -}}
{{- fail "istio.authorizationPolicy sends every request to Pavilion's ext_authz gRPC port, which serves only when pavilion.config.extAuthz is configured (with tenantFrom) and grpc is enabled: configure it or disable istio.authorizationPolicy" -}}
{{- end -}}
{{- end -}}
{{- end -}}
