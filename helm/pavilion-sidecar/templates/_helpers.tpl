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

{{/* A Kubernetes quantity as text: a number from YAML (float64) without an exponent. */}}
{{- define "pavilion-sidecar.quantity" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}
{{- printf "%.0f" (float64 .) -}}
{{- else -}}
{{- trim (toString .) -}}
{{- end -}}
{{- end -}}

{{/*
A Kubernetes quantity ("1Gi", "500M", "1.5Gi", 1073741824) in bytes, as an integer text;
"" when it is not one.
*/}}
{{- define "pavilion-sidecar.bytes" -}}
{{- $q := include "pavilion-sidecar.quantity" . -}}
{{- $re := "^([0-9]+(\\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$" -}}
{{- if regexMatch $re $q -}}
{{- $units := dict "" 1.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 -}}
{{- $n := float64 (regexReplaceAll $re $q "${1}") -}}
{{- $unit := regexReplaceAll $re $q "${3}" -}}
{{- printf "%.0f" (mulf $n (get $units $unit)) -}}
{{- end -}}
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
{{- $_ := set $audit "signer" (dict "kind" "pkcs11" "modulePath" $p.hsm.modulePath "tokenLabel" $p.hsm.tokenLabel "keyLabel" $p.hsm.keyLabel "pinEnv" "PAVILION_HSM_PIN" "generateKey" $p.hsm.generateKey "allowImportedKey" (default false $p.hsm.allowImportedKey) "operationTimeoutMs" (default 10000 $p.hsm.operationTimeoutMs)) -}}
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

{{/*
The pod's annotations: the including chart's own (`annotations`) plus the sidecar's, as YAML.
The sidecar's probe rewrite lives in proxy.istio.io/config: when the pod sets that annotation
too, the two ProxyConfigs are merged (proxyMetadata combined) instead of one dropping the
other, which would make the probes fail. Any other annotation both set to different values,
or a proxyMetadata key both set differently, fails the render naming `valuesPath`.

  annotations:
    {{- include "pavilion-sidecar.mergePodAnnotations" (dict "context" . "annotations" .Values.podAnnotations "valuesPath" "podAnnotations") | nindent 4 }}
*/}}
{{- define "pavilion-sidecar.mergePodAnnotations" -}}
{{- $where := .valuesPath | default "podAnnotations" -}}
{{- $out := deepCopy (.annotations | default dict) -}}
{{- $sidecar := include "pavilion-sidecar.podAnnotations" .context | fromYaml -}}
{{- range $key, $value := $sidecar -}}
{{- if not (hasKey $out $key) -}}
{{- $_ := set $out $key $value -}}
{{- else if eq $key "proxy.istio.io/config" -}}
{{- $theirs := toString (get $out $key) | fromYaml -}}
{{- if or (hasKey $theirs "Error") (not (kindIs "map" $theirs)) -}}
{{- fail (printf "%s.\"proxy.istio.io/config\" must be a ProxyConfig (YAML or JSON object) so that the Pavilion sidecar's probe setting can be merged into it: %v" $where (get $theirs "Error")) -}}
{{- end -}}
{{- $mine := fromJson (toString $value) -}}
{{- range $field, $setting := $mine -}}
{{- if eq $field "proxyMetadata" -}}
{{- $meta := get $theirs "proxyMetadata" | default dict -}}
{{- range $name, $v := $setting -}}
{{- if and (hasKey $meta $name) (ne (toString (get $meta $name)) (toString $v)) -}}
{{- fail (printf "%s.\"proxy.istio.io/config\" sets proxyMetadata.%s to %q, but the Pavilion sidecar needs %q (Istio's probe rewrite to localhost): remove it, or set pavilion.probes.mode exec" $where $name (toString (get $meta $name)) (toString $v)) -}}
{{- end -}}
{{- $_ := set $meta $name $v -}}
{{- end -}}
{{- $_ := set $theirs "proxyMetadata" $meta -}}
{{- else if and (hasKey $theirs $field) (ne (toJson (get $theirs $field)) (toJson $setting)) -}}
{{- fail (printf "%s.\"proxy.istio.io/config\" sets %s, which the Pavilion sidecar sets differently" $where $field) -}}
{{- else -}}
{{- $_ := set $theirs $field $setting -}}
{{- end -}}
{{- end -}}
{{- $_ := set $out $key (toJson $theirs) -}}
{{- else if ne (toString (get $out $key)) (toString $value) -}}
{{- fail (printf "%s.%q is %q, but the Pavilion sidecar needs %q: remove it from %s (or change the pavilion.probes / pavilion.metrics setting that needs it)" $where $key (toString (get $out $key)) (toString $value) $where) -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}
