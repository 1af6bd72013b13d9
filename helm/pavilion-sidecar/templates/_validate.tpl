{{/*
Consistency checks the JSON schema cannot express. Renders nothing, or fails the render
with a message naming the values to change.
*/}}
{{- define "pavilion-sidecar.validate" -}}
{{- $p := .Values.pavilion -}}
{{- $cfg := $p.config | default dict -}}
{{- $loopback := include "pavilion-sidecar.httpLoopback" . -}}
{{- $port := dig "http" "port" $p.ports.http.containerPort $cfg -}}
{{- if ne (int $port) (int $p.ports.http.containerPort) -}}
{{- fail (printf "pavilion.config.http.port (%v) must equal pavilion.ports.http.containerPort (%v)" $port $p.ports.http.containerPort) -}}
{{- end -}}
{{- with $cfg.extAuthz -}}
{{- $gport := dig "grpc" "port" $p.ports.grpc.containerPort . -}}
{{- if ne (int $gport) (int $p.ports.grpc.containerPort) -}}
{{- fail (printf "pavilion.config.extAuthz.grpc.port (%v) must equal pavilion.ports.grpc.containerPort (%v)" $gport $p.ports.grpc.containerPort) -}}
{{- end -}}
{{- end -}}
{{- if eq (int $p.ports.http.containerPort) (int $p.ports.grpc.containerPort) -}}
{{- fail "pavilion.ports.http and pavilion.ports.grpc must use different ports" -}}
{{- end -}}
{{- if and (eq $p.probes.mode "httpGet") $loopback (not $p.probes.istioLocalhostRewrite) -}}
{{- fail "pavilion.probes.mode httpGet cannot reach a sidecar bound to loopback (pavilion.config.http.host): the kubelet probes the pod IP. Set pavilion.probes.istioLocalhostRewrite true (Istio), pavilion.probes.mode exec, or http.host 0.0.0.0" -}}
{{- end -}}
{{- if and (eq $p.metrics.mode "direct") $loopback -}}
{{- fail "pavilion.metrics.mode direct needs pavilion.config.http.host 0.0.0.0 (Prometheus scrapes the pod IP); or use metrics.mode istio-merge" -}}
{{- end -}}
{{- $writable := list (printf "%s/" (trimSuffix "/" $p.dataVolume.mountPath)) "/tmp/" -}}
{{- $log := $cfg.decisionLog | default dict -}}
{{- $sink := toString ($log.sink | default "file") -}}
{{- $paths := dict -}}
{{- if eq $sink "file" -}}
{{- $_ := set $paths "pavilion.config.decisionLog.path" (toString ($log.path | default "")) -}}
{{- else if eq $sink "audit" -}}
{{- $audit := $log.audit | default dict -}}
{{- $_ := set $paths "pavilion.config.decisionLog.audit.directory" (toString ($audit.directory | default "")) -}}
{{- with $audit.signer }}{{ if .keyFile }}{{ $_ := set $paths "pavilion.config.decisionLog.audit.signer.keyFile" (toString .keyFile) }}{{ end }}{{ end -}}
{{- with $audit.anchor }}{{ if .path }}{{ $_ := set $paths "pavilion.config.decisionLog.audit.anchor.path" (toString .path) }}{{ end }}{{ end -}}
{{- end -}}
{{- range $name, $path := $paths -}}
{{- $ok := false -}}
{{- range $writable }}{{ if hasPrefix . $path }}{{ $ok = true }}{{ end }}{{ end -}}
{{- if not $ok -}}
{{- fail (printf "%s (%q) must be under a writable mount (%s): the root filesystem is read-only" $name $path (join ", " $writable)) -}}
{{- end -}}
{{- end -}}
{{- if and $p.hsm.enabled (ne $sink "audit") -}}
{{- fail "pavilion.hsm.enabled signs the audit log's checkpoints: it needs pavilion.config.decisionLog.sink audit" -}}
{{- end -}}
{{- $dir := toString (dig "bundles" "directory" "" $cfg) -}}
{{- if not (hasPrefix "/" $dir) -}}
{{- fail "pavilion.config.bundles.directory must be an absolute path" -}}
{{- end -}}
{{- $ids := dict -}}
{{- range $p.tenants -}}
{{- if hasKey $ids .id -}}
{{- fail (printf "pavilion.tenants: tenant %q is listed twice" .id) -}}
{{- end -}}
{{- $_ := set $ids .id true -}}
{{- end -}}
{{- if and $p.bundleVerification.enabled (not $p.bundleVerification.secretName) -}}
{{- fail "pavilion.bundleVerification.enabled needs pavilion.bundleVerification.secretName" -}}
{{- end -}}
{{- if $p.hsm.enabled -}}
{{- if not $p.hsm.pin.secretName -}}
{{- fail "pavilion.hsm.enabled needs pavilion.hsm.pin.secretName (the Secret holding the HSM PIN)" -}}
{{- end -}}
{{- if not (hasPrefix (printf "%s/" (trimSuffix "/" $p.hsm.module.mountPath)) $p.hsm.modulePath) -}}
{{- fail (printf "pavilion.hsm.modulePath (%q) must be under pavilion.hsm.module.mountPath (%q)" $p.hsm.modulePath $p.hsm.module.mountPath) -}}
{{- end -}}
{{- $m := $p.hsm.module -}}
{{- if and (eq $m.type "hostPath") (not $m.hostPath.path) -}}
{{- fail "pavilion.hsm.module.type hostPath needs pavilion.hsm.module.hostPath.path" -}}
{{- else if and (eq $m.type "csi") (not $m.csi.driver) -}}
{{- fail "pavilion.hsm.module.type csi needs pavilion.hsm.module.csi.driver" -}}
{{- else if and (eq $m.type "persistentVolumeClaim") (not $m.persistentVolumeClaim.claimName) -}}
{{- fail "pavilion.hsm.module.type persistentVolumeClaim needs pavilion.hsm.module.persistentVolumeClaim.claimName" -}}
{{- end -}}
{{- end -}}
{{- end -}}
