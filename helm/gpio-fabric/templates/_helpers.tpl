{{/* Chart name, truncated to a DNS label. */}}
{{- define "gpio-fabric.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: RELEASE-NAME, or the release name alone when it already contains the chart name. */}}
{{- define "gpio-fabric.fullname" -}}
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

{{- define "gpio-fabric.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Common labels; call with (dict "ctx" $ "component" "linestate"). */}}
{{- define "gpio-fabric.labels" -}}
helm.sh/chart: {{ include "gpio-fabric.chart" .ctx }}
{{ include "gpio-fabric.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: gpio-fabric
{{- end -}}

{{- define "gpio-fabric.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpio-fabric.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image reference; call with (dict "ctx" $ "image" .Values.image.linestate). */}}
{{- define "gpio-fabric.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .image.tag -}}
{{- if .ctx.Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .ctx.Values.image.registry) .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "gpio-fabric.redisName" -}}
{{- printf "%s-redis" (include "gpio-fabric.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The line-state service address agents use. */}}
{{- define "gpio-fabric.serverAddress" -}}
{{- if .Values.agent.server -}}
{{- .Values.agent.server -}}
{{- else -}}
{{- printf "%s.%s.svc:%s" (include "gpio-fabric.fullname" .) .Release.Namespace (toString .Values.linestate.port) -}}
{{- end -}}
{{- end -}}

{{/*
Environment of the line-state container that selects the store. The Redis password comes
from a Secret into REDIS_PASSWORD and is spliced into GPIOFABRIC_REDIS by Kubernetes'
$(VAR) expansion: it never appears in the pod spec or the command line.
*/}}
{{- define "gpio-fabric.redisEnv" -}}
{{- if eq .Values.linestate.store "redis" }}
{{- if eq .Values.redis.mode "bundled" }}
{{- $host := printf "%s:6379" (include "gpio-fabric.redisName" .) }}
{{- if .Values.redis.bundled.auth.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.bundled.auth.existingSecret }}
      key: {{ .Values.redis.bundled.auth.passwordKey }}
- name: GPIOFABRIC_REDIS
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s" $host | quote }}
{{- else }}
- name: GPIOFABRIC_REDIS
  value: {{ printf "redis://%s" $host | quote }}
{{- end }}
{{- else }}
{{- $ext := .Values.redis.external }}
{{- $url := required "redis.external.url is required when redis.mode is external (e.g. redis://redis.example:6379/0)" $ext.url }}
{{- if contains "@" $url }}
{{- fail "redis.external.url must not contain credentials: put the password in a Secret (redis.external.passwordSecret)" }}
{{- end }}
{{- $scheme := ternary "rediss" "redis" (hasPrefix "rediss://" $url) }}
{{- $rest := $url | trimPrefix "rediss://" | trimPrefix "redis://" }}
{{- if $ext.passwordSecret.name }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $ext.passwordSecret.name }}
      key: {{ $ext.passwordSecret.key }}
- name: GPIOFABRIC_REDIS
  value: {{ printf "%s://%s:$(REDIS_PASSWORD)@%s" $scheme $ext.username $rest | quote }}
{{- else if $ext.username }}
{{- fail "redis.external.username needs redis.external.passwordSecret" }}
{{- else }}
- name: GPIOFABRIC_REDIS
  value: {{ $url | quote }}
{{- end }}
{{- if $ext.sentinel.enabled }}
- name: GPIOFABRIC_REDIS_SENTINELS
  value: {{ join "," $ext.sentinel.addresses | quote }}
- name: GPIOFABRIC_REDIS_SENTINEL_NAME
  value: {{ $ext.sentinel.masterName | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Checks that the schema cannot express. */}}
{{- define "gpio-fabric.validate" -}}
{{- if and (eq .Values.linestate.store "memory") (gt (int .Values.linestate.replicas) 1) }}
{{- fail (printf "linestate.store memory keeps the state inside one process: it needs linestate.replicas 1, not %d (use store redis for more replicas)" (int .Values.linestate.replicas)) }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret (a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt)" }}
{{- end }}
{{- if contains "/../" (printf "%s/" .Values.agent.socketDir) }}
{{- fail (printf "agent.socketDir must be an absolute path without '..': %s" .Values.agent.socketDir) }}
{{- end }}
{{- $chips := dict }}
{{- $sockets := dict }}
{{- range $i, $vm := .Values.agent.vms }}
{{- if hasKey $chips $vm.chip }}
{{- fail (printf "agent.vms: chip %s is listed twice" $vm.chip) }}
{{- end }}
{{- $_ := set $chips $vm.chip true }}
{{- $sock := default (printf "%s.sock" $vm.chip) $vm.socket }}
{{- if hasKey $sockets $sock }}
{{- fail (printf "agent.vms: socket %s is used by two VMs" $sock) }}
{{- end }}
{{- $_ := set $sockets $sock true }}
{{- if gt (len (default (list) $vm.names)) (int $vm.lines) }}
{{- fail (printf "agent.vms[%d] (chip %s): %d names for %d lines" $i $vm.chip (len $vm.names) (int $vm.lines)) }}
{{- end }}
{{- end }}
{{- end -}}

{{/* "chip=socket,..." of the agent DaemonSet (an annotation: a changed VM list rolls the pods). */}}
{{- define "gpio-fabric.agentVmList" -}}
{{- $out := list -}}
{{- range .Values.agent.vms -}}
{{- $out = append $out (printf "%s=%s" .chip (default (printf "%s.sock" .chip) .socket)) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/*
TLS environment of a container (docs/security.md): the files of the mounted
kubernetes.io/tls Secret. With ca.crt the service requires client certificates and
authorizes by role; clients verify the service with it.
*/}}
{{- define "gpio-fabric.tlsEnv" -}}
{{- $dir := trimSuffix "/" . -}}
- name: GPIOFABRIC_TLS_CERT
  value: {{ printf "%s/tls.crt" $dir | quote }}
- name: GPIOFABRIC_TLS_KEY
  value: {{ printf "%s/tls.key" $dir | quote }}
- name: GPIOFABRIC_TLS_CA
  value: {{ printf "%s/ca.crt" $dir | quote }}
{{- end }}
