{{/*
The sidecar container, as one item of a pod's `containers:` list:

  containers:
    - name: my-app
      …
    {{- include "pavilion-sidecar.container" . | nindent 4 }}
*/}}
{{- define "pavilion-sidecar.container" -}}
{{- include "pavilion-sidecar.validate" . -}}
{{- $p := .Values.pavilion -}}
{{- $httpPort := $p.ports.http.name -}}
- name: {{ $p.containerName }}
  image: {{ include "pavilion-sidecar.image" . | quote }}
  imagePullPolicy: {{ $p.image.pullPolicy }}
  command:
    {{- toYaml $p.command | nindent 4 }}
  {{- with $p.args }}
  args:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  env:
    - name: PAVILION_CONFIG
      value: {{ $p.configPath | quote }}
    {{- if $p.bundleVerification.enabled }}
    - name: PAVILION_BUNDLE_KEYS_DIR
      value: {{ $p.bundleVerification.mountPath | quote }}
    {{- end }}
    {{- if $p.hsm.enabled }}
    - name: PAVILION_HSM_PIN
      valueFrom:
        secretKeyRef:
          name: {{ $p.hsm.pin.secretName | quote }}
          key: {{ $p.hsm.pin.key | quote }}
    {{- end }}
    {{- if $p.nats.url }}
    - name: PAVILION_NATS_URL
      value: {{ $p.nats.url | quote }}
    {{- end }}
    {{- if $p.nats.credentials.secretName }}
    - name: PAVILION_NATS_CREDS
      value: {{ printf "%s/%s" (trimSuffix "/" $p.nats.credentials.mountPath) $p.nats.credentials.key | quote }}
    {{- end }}
    {{- if $p.redis.url }}
    - name: PAVILION_REDIS_URL
      value: {{ $p.redis.url | quote }}
    {{- end }}
    {{- if $p.redis.password.secretName }}
    - name: PAVILION_REDIS_PASSWORD
      valueFrom:
        secretKeyRef:
          name: {{ $p.redis.password.secretName | quote }}
          key: {{ $p.redis.password.key | quote }}
    {{- end }}
    {{- with $p.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: {{ $p.ports.http.name }}
      containerPort: {{ $p.ports.http.containerPort }}
      protocol: TCP
    - name: {{ $p.ports.grpc.name }}
      containerPort: {{ $p.ports.grpc.containerPort }}
      protocol: TCP
  {{- if eq $p.probes.mode "exec" }}
  {{- $base := printf "http://%s:%v" (include "pavilion-sidecar.httpLocalAddress" .) $p.ports.http.containerPort }}
  startupProbe:
    exec:
      command: ["node", "-e", {{ printf "fetch('%s/health/live').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))" $base | quote }}]
    {{- toYaml $p.probes.startup | nindent 4 }}
  livenessProbe:
    exec:
      command: ["node", "-e", {{ printf "fetch('%s/health/live').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))" $base | quote }}]
    {{- toYaml $p.probes.liveness | nindent 4 }}
  readinessProbe:
    exec:
      command: ["node", "-e", {{ printf "fetch('%s/health/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))" $base | quote }}]
    {{- toYaml $p.probes.readiness | nindent 4 }}
  {{- else }}
  startupProbe:
    httpGet:
      path: /health/live
      port: {{ $httpPort }}
    {{- toYaml $p.probes.startup | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /health/live
      port: {{ $httpPort }}
    {{- toYaml $p.probes.liveness | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /health/ready
      port: {{ $httpPort }}
    {{- toYaml $p.probes.readiness | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml $p.resources | nindent 4 }}
  securityContext:
    {{- toYaml (required "pavilion.securityContext must not be removed: the sidecar runs non-root with a read-only root filesystem (the schema checks its fields)" $p.securityContext) | nindent 4 }}
  terminationMessagePolicy: FallbackToLogsOnError
  volumeMounts:
    - name: pavilion-config
      mountPath: {{ $p.configPath }}
      subPath: config.json
      readOnly: true
    - name: pavilion-data
      mountPath: {{ $p.dataVolume.mountPath }}
    - name: pavilion-tmp
      mountPath: /tmp
    {{- if $p.bundles.volume }}
    - name: pavilion-bundles
      mountPath: {{ $p.config.bundles.directory }}
      readOnly: true
    {{- end }}
    {{- if $p.bundleVerification.enabled }}
    - name: pavilion-bundle-keys
      mountPath: {{ $p.bundleVerification.mountPath }}
      readOnly: true
    {{- end }}
    {{- if $p.apiTokens.enabled }}
    - name: pavilion-api-tokens
      mountPath: {{ $p.apiTokens.mountPath }}
      readOnly: true
    {{- end }}
    {{- if $p.hsm.enabled }}
    - name: pavilion-pkcs11
      mountPath: {{ $p.hsm.module.mountPath }}
      readOnly: true
    {{- end }}
    {{- if $p.nats.credentials.secretName }}
    - name: pavilion-nats-creds
      mountPath: {{ $p.nats.credentials.mountPath }}
      readOnly: true
    {{- end }}
    {{- with $p.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
