{{/*
The sidecar's volumes, as items of a pod's `volumes:` list:

  volumes:
    - name: my-app-data
      …
    {{- include "pavilion-sidecar.volumes" . | nindent 4 }}
*/}}
{{- define "pavilion-sidecar.volumes" -}}
{{- include "pavilion-sidecar.validate" . -}}
{{- $p := .Values.pavilion -}}
- name: pavilion-config
  configMap:
    name: {{ include "pavilion-sidecar.configMapName" . }}
- name: pavilion-data
  {{- if $p.dataVolume.volume }}
  {{- toYaml $p.dataVolume.volume | nindent 2 }}
  {{- else }}
  emptyDir: {{ include "pavilion-sidecar.emptyDir" $p.dataVolume }}
  {{- end }}
- name: pavilion-tmp
  emptyDir: {{ include "pavilion-sidecar.emptyDir" $p.tmpVolume }}
{{- with $p.bundles.volume }}
- name: pavilion-bundles
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $p.bundleVerification.enabled }}
- name: pavilion-bundle-keys
  secret:
    secretName: {{ $p.bundleVerification.secretName }}
    # 0444: only this container mounts the volume; readable by uid 10001 without an fsGroup.
    defaultMode: 292
{{- end }}
{{- if $p.apiTokens.enabled }}
- name: pavilion-api-tokens
  secret:
    secretName: {{ $p.apiTokens.secretName }}
    # 0444 as the bundle keys: only this container mounts the volume (files are root's).
    defaultMode: 292
{{- end }}
{{- if $p.hsm.enabled }}
{{- $m := $p.hsm.module }}
- name: pavilion-pkcs11
  {{- if eq $m.type "hostPath" }}
  hostPath:
    path: {{ $m.hostPath.path }}
    {{- with $m.hostPath.type }}
    type: {{ . }}
    {{- end }}
  {{- else if eq $m.type "csi" }}
  csi:
    driver: {{ $m.csi.driver }}
    readOnly: true
    {{- with $m.csi.volumeAttributes }}
    volumeAttributes:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  {{- else }}
  persistentVolumeClaim:
    claimName: {{ $m.persistentVolumeClaim.claimName }}
    readOnly: true
  {{- end }}
{{- end }}
{{- if $p.nats.credentials.secretName }}
- name: pavilion-nats-creds
  secret:
    secretName: {{ $p.nats.credentials.secretName }}
    items:
      - key: {{ $p.nats.credentials.key }}
        path: {{ $p.nats.credentials.key }}
    defaultMode: 292
{{- end }}
{{- end -}}

{{/* An emptyDir source from { sizeLimit, medium } (either may be empty). */}}
{{- define "pavilion-sidecar.emptyDir" -}}
{{- $ed := dict -}}
{{- with .sizeLimit }}{{ $_ := set $ed "sizeLimit" (include "pavilion-sidecar.quantity" .) }}{{ end -}}
{{- with .medium }}{{ $_ := set $ed "medium" . }}{{ end -}}
{{- toJson $ed -}}
{{- end -}}
