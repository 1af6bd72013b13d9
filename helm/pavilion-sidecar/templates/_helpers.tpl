{{/*
Pavilion sidecar: names, image, and the rendered JSON config.
Every template here takes the including chart's root context (`.`) and reads
`.Values.pavilion` (the including chart imports this chart's defaults into it).
*/}}

{{/* Resource name prefix: "<release>-pavilion", or pavilion.fullnameOverride. */}}
{{- define "pavilion-sidecar.fullname" -}}
{{- if .Values.pavilion.fullnameOverride -}}
{{- .Values.pavilion.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-pavilion" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pavilion-sidecar.configMapName" -}}
{{- printf "%s-config" (include "pavilion-sidecar.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pavilion-sidecar.labels" -}}
app.kubernetes.io/component: policy-sidecar
app.kubernetes.io/part-of: pavilion
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Values.pavilion.image.tag | quote }}
{{- end -}}

{{- define "pavilion-sidecar.image" -}}
{{- $img := .Values.pavilion.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (toString $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when the sidecar's HTTP server binds a loopback address only. */}}
{{- define "pavilion-sidecar.httpLoopback" -}}
{{- $host := toString (dig "http" "host" "127.0.0.1" (.Values.pavilion.config | default dict)) -}}
{{- if or (hasPrefix "127." $host) (eq $host "localhost") (eq $host "::1") -}}true{{- end -}}
{{- end -}}

{{/* Address probes and tools inside the container use to reach the HTTP server. */}}
{{- define "pavilion-sidecar.httpLocalAddress" -}}
{{- $host := toString (dig "http" "host" "127.0.0.1" (.Values.pavilion.config | default dict)) -}}
{{- if or (eq $host "0.0.0.0") (eq $host "::") -}}127.0.0.1{{- else if eq $host "::1" -}}[::1]{{- else -}}{{ $host }}{{- end -}}
{{- end -}}

{{/*
The Pavilion JSON config: pavilion.config (production defaults already merged by Helm),
plus http.port (and extAuthz.grpc.port when extAuthz is configured) from the container
ports, labels from the release and image tag, and the tenants list.
*/}}
{{- define "pavilion-sidecar.config" -}}
{{- $p := .Values.pavilion -}}
{{- $cfg := deepCopy ($p.config | default dict) -}}
{{- $http := deepCopy (get $cfg "http" | default dict) -}}
{{- if not (hasKey $http "port") -}}
{{- $_ := set $http "port" $p.ports.http.containerPort -}}
{{- end -}}
{{- $_ := set $cfg "http" $http -}}
{{- $labels := deepCopy (get $cfg "labels" | default dict) -}}
{{- if not (hasKey $labels "id") -}}
{{- $_ := set $labels "id" (include "pavilion-sidecar.fullname" .) -}}
{{- end -}}
{{- if not (hasKey $labels "version") -}}
{{- $_ := set $labels "version" (toString $p.image.tag) -}}
{{- end -}}
{{- $_ := set $cfg "labels" $labels -}}
{{- $_ := set $cfg "tenants" ($p.tenants | default list) -}}
{{- $log := deepCopy (get $cfg "decisionLog" | default dict) -}}
{{- if ne (toString ($log.sink | default "file")) "audit" -}}
{{- if hasKey $log "audit" -}}
{{- /* the chart's default audit block is for sink audit only (the sidecar refuses it otherwise) */ -}}
{{- $_ := unset $log "audit" -}}
{{- $_ := set $cfg "decisionLog" $log -}}
{{- end -}}
{{- else if $p.hsm.enabled -}}
{{- $audit := deepCopy (get $log "audit" | default dict) -}}
{{- if not (hasKey $audit "signer") -}}
{{- $_ := set $audit "signer" (dict "kind" "pkcs11" "modulePath" $p.hsm.modulePath "tokenLabel" $p.hsm.tokenLabel "keyLabel" $p.hsm.keyLabel "pinEnv" "PAVILION_HSM_PIN" "generateKey" $p.hsm.generateKey) -}}
{{- end -}}
{{- $_ := set $log "audit" $audit -}}
{{- $_ := set $cfg "decisionLog" $log -}}
{{- end -}}
{{- if hasKey $cfg "extAuthz" -}}
{{- $ea := deepCopy (get $cfg "extAuthz" | default dict) -}}
{{- $grpc := deepCopy (get $ea "grpc" | default dict) -}}
{{- if not (hasKey $grpc "port") -}}
{{- $_ := set $grpc "port" $p.ports.grpc.containerPort -}}
{{- end -}}
{{- $_ := set $ea "grpc" $grpc -}}
{{- $_ := set $cfg "extAuthz" $ea -}}
{{- end -}}
{{- toPrettyJson $cfg -}}
{{- end -}}

{{/*
Pod annotations the sidecar needs, as YAML (merge them into the pod template's
annotations: `include "pavilion-sidecar.podAnnotations" . | fromYaml`).
*/}}
{{- define "pavilion-sidecar.podAnnotations" -}}
{{- $p := .Values.pavilion -}}
checksum/pavilion-config: {{ include "pavilion-sidecar.config" . | sha256sum }}
{{- if and (eq $p.probes.mode "httpGet") $p.probes.istioLocalhostRewrite (include "pavilion-sidecar.httpLoopback" .) }}
sidecar.istio.io/rewriteAppHTTPProbers: "true"
proxy.istio.io/config: '{"proxyMetadata":{"REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION":"true"}}'
{{- end }}
{{- if eq $p.metrics.mode "istio-merge" }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ $p.ports.http.containerPort | toString | quote }}
prometheus.io/path: {{ $p.metrics.path | quote }}
{{- else if eq $p.metrics.mode "direct" }}
traffic.sidecar.istio.io/excludeInboundPorts: {{ $p.ports.http.containerPort | toString | quote }}
{{- end }}
{{- end -}}
