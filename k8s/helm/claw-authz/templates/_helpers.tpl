{{/* Names and labels. */}}
{{- define "claw-authz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "claw-authz.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "claw-authz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "claw-authz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "claw-authz.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "claw-authz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end }}

{{- define "claw-authz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "claw-authz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "claw-authz.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Refuse shapes that would silently weaken replay protection or cannot start. */}}
{{- define "claw-authz.validate" -}}
{{- $replicas := ternary .Values.autoscaling.maxReplicas .Values.replicaCount .Values.autoscaling.enabled }}
{{- if and (gt (int $replicas) 1) (ne .Values.nonce.store "redis") }}
{{- fail "more than one replica (replicaCount or autoscaling) needs nonce.store: redis: replicas share replay protection only through Redis" }}
{{- end }}
{{- if and (or (eq .Values.nonce.store "redis") (eq .Values.trust.store "redis") (eq .Values.rateLimit.store "redis")) (not .Values.redis.existingSecret) }}
{{- fail "a redis store needs redis.existingSecret: a Secret holding the Redis URL (redis://user:password@host:6379/0)" }}
{{- end }}
{{- if and (eq .Values.mode "sidecar") (not .Values.sidecar.app.image) }}
{{- fail "mode: sidecar needs sidecar.app.image (the application Envoy fronts)" }}
{{- end }}
{{- if and (or .Values.tls.clientAuth .Values.tls.allowedClients) (not .Values.tls.existingSecret) }}
{{- fail "tls.clientAuth and tls.allowedClients need tls.existingSecret (the Secret with tls.crt, tls.key and ca.crt)" }}
{{- end }}
{{- if and .Values.tls.allowedClients (not .Values.tls.clientAuth) }}
{{- fail "tls.allowedClients needs tls.clientAuth: true (identities come from verified client certificates)" }}
{{- end }}
{{- if and (include "claw-authz.grpcSocket" .) .Values.tls.existingSecret }}
{{- fail "tls.existingSecret secures the TCP hop: set sidecar.grpcSocket: false with it (the Unix socket's file permissions decide who may connect)" }}
{{- end }}
{{- $listen := default (dict) .Values.extraConfig.listen }}
{{- if and (include "claw-authz.grpcSocket" .) (hasKey $listen "grpc") }}
{{- fail "with sidecar.grpcSocket, Envoy's pipe address and listen.grpc are set together: not extraConfig.listen.grpc" }}
{{- end }}
{{- if or (hasKey $listen "drain_secs") (hasKey $listen "grace_secs") }}
{{- fail "set shutdown.drainSecs and shutdown.graceSecs, not extraConfig.listen: terminationGracePeriodSeconds follows them" }}
{{- end }}
{{- end }}

{{/* "true" when Envoy in the pod reaches claw-authz over the Unix socket, else empty. */}}
{{- define "claw-authz.grpcSocket" -}}
{{- if and (eq .Values.mode "sidecar") .Values.sidecar.grpcSocket }}true{{- end }}
{{- end }}

{{/* Where the sidecar's Unix socket lives (a volume both containers mount). */}}
{{- define "claw-authz.socketDir" -}}/var/run/claw-authz{{- end }}

{{/* The claw-authz config file (README "Configuration"); secrets come from the environment. */}}
{{- define "claw-authz.config" -}}
{{- $grpc := printf "0.0.0.0:%d" (int .Values.ports.grpc) }}
{{- if include "claw-authz.grpcSocket" . }}
{{- $grpc = printf "unix:%s/grpc.sock" (include "claw-authz.socketDir" .) }}
{{- end }}
{{- $config := dict
  "listen" (dict "grpc" $grpc "admin" (printf "0.0.0.0:%d" (int .Values.ports.admin)) "drain_secs" .Values.shutdown.drainSecs "grace_secs" .Values.shutdown.graceSecs)
  "registry" (dict "url" .Values.registry.url "timeout_ms" .Values.registry.timeoutMs "request_timeout_ms" .Values.registry.requestTimeoutMs)
  "nonce" (dict "store" .Values.nonce.store "dir" "/var/lib/claw-authz/nonces")
  "trust" (dict "store" .Values.trust.store)
  "rate_limit" (dict "store" .Values.rateLimit.store)
  "log" (dict "level" .Values.log.level "format" .Values.log.format)
  "events" (dict "admin_endpoint" (not (empty .Values.eventsToken.existingSecret)))
}}
{{- if .Values.registry.issuer }}
{{- $_ := set $config.registry "issuer" .Values.registry.issuer }}
{{- end }}
{{- if eq .Values.trust.store "file" }}
{{- $_ := set $config.trust "file" "/etc/claw-authz/trust/trust.yaml" }}
{{- end }}
{{- if .Values.eventsToken.existingSecret }}
{{- $_ := set $config.events "token_file" "/etc/claw-authz/events-token/token" }}
{{- end }}
{{- if .Values.tls.existingSecret }}
{{- $tls := dict "cert_file" "/etc/claw-authz/tls/tls.crt" "key_file" "/etc/claw-authz/tls/tls.key" }}
{{- if .Values.tls.clientAuth }}
{{- $_ := set $tls "client_ca_file" "/etc/claw-authz/tls/ca.crt" }}
{{- $_ := set $tls "allowed_clients" .Values.tls.allowedClients }}
{{- end }}
{{- $_ := set $config "tls" $tls }}
{{- end }}
{{- if .Values.redis.existingSecret }}
{{- $_ := set $config "redis" (dict "timeout_ms" .Values.redis.timeoutMs) }}
{{- end }}
{{- if .Values.telemetry.otlpEndpoint }}
{{- $_ := set $config "telemetry" (dict "otlp_endpoint" .Values.telemetry.otlpEndpoint "trace_sample_percent" .Values.telemetry.traceSamplePercent) }}
{{- end }}
{{- with .Values.routes }}
{{- $_ := set $config "routes" . }}
{{- end }}
{{- with .Values.policies }}
{{- $_ := set $config "policies" . }}
{{- end }}
{{- toYaml (mergeOverwrite $config (deepCopy .Values.extraConfig)) }}
{{- end }}

{{/* The claw-authz container; other charts can include it with the volumes below. */}}
{{- define "claw-authz.container" -}}
- name: claw-authz
  image: {{ include "claw-authz.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["serve", "--config", "/etc/claw-authz/config/config.yaml"]
  {{- if .Values.redis.existingSecret }}
  env:
    - name: CLAW_AUTHZ_REDIS__URL
      valueFrom:
        secretKeyRef:
          name: {{ .Values.redis.existingSecret }}
          key: {{ .Values.redis.secretKey }}
  {{- end }}
  ports:
    - name: grpc
      containerPort: {{ .Values.ports.grpc }}
      protocol: TCP
    - name: admin
      containerPort: {{ .Values.ports.admin }}
      protocol: TCP
  {{- /* The kubelet's gRPC probe speaks plaintext only: with TLS on the gRPC port, the
         probes ask the admin listener's /readyz, which reports the same readiness. */}}
  startupProbe:
    {{- include "claw-authz.readiness" . | nindent 4 }}
    periodSeconds: {{ .Values.probes.startup.periodSeconds }}
    failureThreshold: {{ .Values.probes.startup.failureThreshold }}
  readinessProbe:
    {{- include "claw-authz.readiness" . | nindent 4 }}
    periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
    failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: admin
    periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
    failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: claw-authz-config
      mountPath: /etc/claw-authz/config
      readOnly: true
    - name: claw-authz-state
      mountPath: /var/lib/claw-authz
    - name: tmp
      mountPath: /tmp
    {{- if eq .Values.trust.store "file" }}
    - name: claw-authz-trust
      mountPath: /etc/claw-authz/trust
      readOnly: true
    {{- end }}
    {{- if .Values.eventsToken.existingSecret }}
    - name: claw-authz-events-token
      mountPath: /etc/claw-authz/events-token
      readOnly: true
    {{- end }}
    {{- if .Values.tls.existingSecret }}
    - name: claw-authz-tls
      mountPath: /etc/claw-authz/tls
      readOnly: true
    {{- end }}
    {{- if include "claw-authz.grpcSocket" . }}
    - name: claw-authz-socket
      mountPath: {{ include "claw-authz.socketDir" . }}
    {{- end }}
{{- end }}

{{- define "claw-authz.readiness" -}}
{{- if or .Values.tls.existingSecret (include "claw-authz.grpcSocket" .) -}}
httpGet:
  path: /readyz
  port: admin
{{- else -}}
grpc:
  port: {{ .Values.ports.grpc }}
  service: envoy.service.auth.v3.Authorization
{{- end }}
{{- end }}

{{- define "claw-authz.volumes" -}}
- name: claw-authz-config
  configMap:
    name: {{ include "claw-authz.fullname" . }}
- name: claw-authz-state
  {{- if .Values.nonce.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.nonce.existingClaim }}
  {{- else }}
  emptyDir: {}
  {{- end }}
- name: tmp
  emptyDir: {}
{{- if include "claw-authz.grpcSocket" . }}
- name: claw-authz-socket
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
{{- if eq .Values.trust.store "file" }}
- name: claw-authz-trust
  configMap:
    name: {{ include "claw-authz.fullname" . }}-trust
{{- end }}
{{- if .Values.eventsToken.existingSecret }}
- name: claw-authz-events-token
  secret:
    secretName: {{ .Values.eventsToken.existingSecret }}
    items:
      - key: {{ .Values.eventsToken.secretKey }}
        path: token
{{- end }}
{{- if .Values.tls.existingSecret }}
- name: claw-authz-tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
{{- end }}
{{- end }}
