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
{{- /* pseudonymisation keys and last known good bundles: a path the config names, or the
       image's default under /app/var (read-only) when the feature is on and names none */ -}}
{{- $privacy := $log.privacy | default dict -}}
{{- if $privacy.pseudonymKeyDirectory -}}
{{- $_ := set $paths "pavilion.config.decisionLog.privacy.pseudonymKeyDirectory" (toString $privacy.pseudonymKeyDirectory) -}}
{{- else if or $privacy.pseudonymiseFields $privacy.pseudonymiseFieldsByTenant -}}
{{- $_ := set $paths "pavilion.config.decisionLog.privacy.pseudonymKeyDirectory (unset: the image default)" "/app/var/pseudonym-keys" -}}
{{- end -}}
{{- $bundlesCfg := $cfg.bundles | default dict -}}
{{- if $bundlesCfg.persistDirectory -}}
{{- $_ := set $paths "pavilion.config.bundles.persistDirectory" (toString $bundlesCfg.persistDirectory) -}}
{{- else if or (eq (toString ($bundlesCfg.source | default "")) "nats") (and $p.nats.url (not $bundlesCfg.source)) -}}
{{- $_ := set $paths "pavilion.config.bundles.persistDirectory (unset: the image default)" "/app/var/bundles" -}}
{{- end -}}
{{- range $name, $path := $paths -}}
{{- $ok := false -}}
{{- range $writable }}{{ if hasPrefix . $path }}{{ $ok = true }}{{ end }}{{ end -}}
{{- if not $ok -}}
{{- fail (printf "%s (%q) must be under a writable mount (%s): the root filesystem is read-only" $name $path (join ", " $writable)) -}}
{{- end -}}
{{- end -}}
{{- if eq $sink "audit" -}}
{{- /* the data volume must hold every tenant's audit log (maxDiskBytes is per tenant) */ -}}
{{- $audit := $log.audit | default dict -}}
{{- $maxDisk := 1073741824.0 -}}
{{- if $audit.maxDiskBytes }}{{ $maxDisk = float64 $audit.maxDiskBytes }}{{ end -}}
{{- /* the sidecar's own checks, so a render does not give a pod that fails at its config */ -}}
{{- if and $audit.rotateAfterMs (lt (float64 $audit.rotateAfterMs) 60000.0) -}}
{{- fail (printf "pavilion.config.decisionLog.audit.rotateAfterMs = %v: must be 0 (never by age) or at least 60000 (a minute)" $audit.rotateAfterMs) -}}
{{- end -}}
{{- if and $audit.keepArchivedDays (not $audit.rotateAfterMs) -}}
{{- fail "pavilion.config.decisionLog.audit.keepArchivedDays needs rotateAfterMs: without it a decision can stay in the live epoch, out of retention's reach" -}}
{{- end -}}
{{- /* with rotation (by size or by age), each tenant also keeps keepArchivedEpochs sealed epochs
      whole; one can reach maxDiskBytes (an epoch is sealed only once JetStream holds it), so
      each counts as a budget; keepArchivedDays bounds them in time, not in bytes */ -}}
{{- $rotates := or $audit.rotateAtBytes $audit.rotateAfterMs -}}
{{- $rotateBy := "rotateAfterMs" -}}
{{- if $audit.rotateAtBytes }}{{ $rotateBy = "rotateAtBytes" }}{{ end -}}
{{- $keep := 0.0 -}}
{{- if $audit.keepArchivedEpochs }}{{ $keep = float64 $audit.keepArchivedEpochs }}{{ end -}}
{{- if and $rotates (eq $keep 0.0) -}}
{{- fail (printf "pavilion.config.decisionLog.audit.%s without keepArchivedEpochs keeps every sealed epoch: the archive grows without bound and fills the data volume (an emptyDir is then evicted with the audit log). Set keepArchivedEpochs (older epochs are pruned to a verifiable stub; keepArchivedDays bounds the archive in time, not in bytes)" $rotateBy) -}}
{{- end -}}
{{- /* keepArchivedEpochs without rotation keeps nothing: no epoch is ever sealed */ -}}
{{- if not $rotates }}{{ $keep = 0.0 }}{{ end -}}
{{- $budgets := addf 1.0 $keep -}}
{{- $tenants := len ($p.tenants | default list) -}}
{{- $counted := max $tenants 1 -}}
{{- $headroom := 0.0 -}}
{{- with $p.dataVolume.headroom -}}
{{- $h := include "pavilion-sidecar.bytes" . -}}
{{- if not $h }}{{ fail (printf "pavilion.dataVolume.headroom (%v) is not a Kubernetes quantity" .) }}{{ end -}}
{{- $headroom = float64 $h -}}
{{- end -}}
{{- $need := addf (mulf (mulf (float64 $counted) $budgets) $maxDisk) $headroom -}}
{{- $sizes := dict -}}
{{- $vol := $p.dataVolume.volume | default dict -}}
{{- if not $vol -}}
{{- with $p.dataVolume.sizeLimit }}{{ $_ := set $sizes "pavilion.dataVolume.sizeLimit (an emptyDir: the kubelet evicts the pod beyond it, deleting the audit log, its keys and anchors)" . }}{{ end -}}
{{- else if $vol.emptyDir -}}
{{- with $vol.emptyDir.sizeLimit }}{{ $_ := set $sizes "pavilion.dataVolume.volume.emptyDir.sizeLimit (the kubelet evicts the pod beyond it, deleting the audit log, its keys and anchors)" . }}{{ end -}}
{{- else if $vol.ephemeral -}}
{{- with (dig "volumeClaimTemplate" "spec" "resources" "requests" "storage" "" $vol.ephemeral) }}{{ $_ := set $sizes "pavilion.dataVolume.volume.ephemeral.volumeClaimTemplate storage request" . }}{{ end -}}
{{- end -}}
{{- /* with ext_authz, checks no tenant was resolved for go to the _unrouted log (at most 64 MiB): the headroom holds it */ -}}
{{- /* (with rotation it keeps keepArchivedEpochs sealed epochs of its own, up to 64Mi each) */ -}}
{{- $unrouted := mulf $budgets 67108864.0 -}}
{{- if and $sizes (hasKey $cfg "extAuthz") (lt $headroom $unrouted) -}}
{{- fail (printf "pavilion.dataVolume.headroom (%.0f bytes) must hold the _unrouted audit log (up to 64Mi%s: ext_authz checks no tenant was resolved for) besides the keys and anchors: raise it to at least %.0fMi" $headroom (ternary "" (printf ", and as many again for each of its %.0f archived epochs kept" $keep) (eq $keep 0.0)) (divf $unrouted 1048576.0)) -}}
{{- end -}}
{{- range $name, $size := $sizes -}}
{{- $bytes := include "pavilion-sidecar.bytes" $size -}}
{{- if not $bytes -}}
{{- fail (printf "%s (%v) is not a Kubernetes quantity" $name $size) -}}
{{- end -}}
{{- if lt (float64 $bytes) $need -}}
{{- fail (printf "%s = %v (%s bytes) is below %d tenant(s)%s x %spavilion.config.decisionLog.audit.maxDiskBytes (%.0f, a budget per tenant) + pavilion.dataVolume.headroom (%.0f) = %.0f bytes: raise it, lower maxDiskBytes%s, or set pavilion.dataVolume.volume (e.g. an ephemeral volumeClaimTemplate)" $name $size $bytes $counted (ternary " (pavilion.tenants is empty: at least 1)" "" (eq $tenants 0)) (ternary "" (printf "(1 live + %.0f archived epoch(s) kept) x " $keep) (eq $keep 0.0)) $maxDisk $headroom $need (ternary "" " or keepArchivedEpochs" (eq $keep 0.0))) -}}
{{- end -}}
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
{{- if and $p.apiTokens.enabled (not $p.apiTokens.secretName) -}}
{{- fail "pavilion.apiTokens.enabled needs pavilion.apiTokens.secretName" -}}
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
