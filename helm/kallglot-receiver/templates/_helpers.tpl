{{/* Chart name, truncated to a DNS label. */}}
{{- define "kallglot-receiver.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart, unless the release name already contains the chart's. */}}
{{- define "kallglot-receiver.fullname" -}}
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

{{- define "kallglot-receiver.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kallglot-receiver.labels" -}}
helm.sh/chart: {{ include "kallglot-receiver.chart" . }}
{{ include "kallglot-receiver.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kallglot-receiver
{{- end }}

{{- define "kallglot-receiver.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kallglot-receiver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kallglot-receiver.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kallglot-receiver.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kallglot-receiver.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The Secret holding credentials: the user's existingSecret or the chart's own. */}}
{{- define "kallglot-receiver.secretName" -}}
{{- default (include "kallglot-receiver.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "kallglot-receiver.isPostgres" -}}
{{- if eq .Values.database.type "postgresql" }}true{{ end }}
{{- end }}

{{/* PostgreSQL with the migration Job: pods must not migrate on start. */}}
{{- define "kallglot-receiver.migrationJob" -}}
{{- if and (include "kallglot-receiver.isPostgres" .) .Values.database.migrations.job }}true{{ end }}
{{- end }}

{{/* Key/value pairs of the chart-made Secret (shared by the Secret and the migration hook's copy). */}}
{{- define "kallglot-receiver.secretData" -}}
{{- $s := .Values.secrets -}}
{{- if $s.apiKey }}
KALLGLOT_API_KEY: {{ $s.apiKey | b64enc | quote }}
{{- end }}
{{- if $s.webhookSecrets }}
KALLGLOT_WEBHOOK_SECRETS: {{ join "," $s.webhookSecrets | b64enc | quote }}
{{- end }}
{{- if $s.inboundSecrets }}
RECEIVER_INBOUND_SECRETS: {{ join "," $s.inboundSecrets | b64enc | quote }}
{{- end }}
{{- if $s.adminToken }}
RECEIVER_ADMIN_TOKEN: {{ $s.adminToken | b64enc | quote }}
{{- end }}
{{- if $s.sentryDsn }}
SENTRY_DSN: {{ $s.sentryDsn | b64enc | quote }}
{{- end }}
{{- if and (include "kallglot-receiver.isPostgres" .) .Values.database.postgresql.url }}
RECEIVER_DATABASE_URL: {{ .Values.database.postgresql.url | b64enc | quote }}
{{- end }}
{{- /* telephony presets (docs/telephony.md) */}}
{{- if $s.twilioAuthToken }}
RECEIVER_TWILIO_AUTH_TOKEN: {{ $s.twilioAuthToken | b64enc | quote }}
{{- end }}
{{- if $s.telnyxPublicKey }}
RECEIVER_TELNYX_PUBLIC_KEY: {{ $s.telnyxPublicKey | b64enc | quote }}
{{- end }}
{{- if $s.inboundBearerToken }}
RECEIVER_INBOUND_BEARER_TOKEN: {{ $s.inboundBearerToken | b64enc | quote }}
{{- end }}
{{- range $name, $value := $s.handlerCredentials }}
{{ $name }}: {{ $value | toString | b64enc | quote }}
{{- end }}
{{- end }}

{{/* config.yaml of the ConfigMap: non-secret settings and the handlers list. */}}
{{- define "kallglot-receiver.configFile" -}}
{{- $c := .Values.config -}}
kallglot_api_url: {{ $c.kallglotApiUrl | quote }}
analysis_profile: {{ $c.analysisProfile | quote }}
analysis_include: {{ $c.analysisInclude | quote }}
trigger: {{ $c.trigger | quote }}
webhook_tolerance_seconds: {{ $c.webhookToleranceSeconds }}
poll_after_seconds: {{ $c.pollAfterSeconds }}
analysis_deadline_seconds: {{ $c.analysisDeadlineSeconds }}
credit_reserve: {{ $c.creditReserve }}
min_duration_seconds: {{ $c.minDurationSeconds }}
max_body_bytes: {{ $c.maxBodyBytes | int64 }}
log_format: {{ $c.logFormat | quote }}
log_level: {{ $c.logLevel | quote }}
shutdown_grace_seconds: {{ $c.shutdownGraceSeconds }}
retention_days: {{ $c.retentionDays }}
event_retention_hours: {{ $c.eventRetentionHours }}
session_memory_days: {{ $c.sessionMemoryDays }}
start_probe_max_seconds: {{ $c.startProbeMaxSeconds }}
{{- with $c.sentryEnvironment }}
sentry_environment: {{ . | quote }}
{{- end }}
{{- /* telephony presets and operators */}}
{{- with $c.publicUrl }}
public_url: {{ . | quote }}
{{- end }}
end_session: {{ $c.endSession }}
{{- if not (kindIs "invalid" $c.twilioEndSession) }}
twilio_end_session: {{ $c.twilioEndSession }}
{{- end }}
{{- if not (kindIs "invalid" $c.telnyxEndSession) }}
telnyx_end_session: {{ $c.telnyxEndSession }}
{{- end }}
call_settle_seconds: {{ $c.callSettleSeconds }}
{{- with $c.callEndedMapping }}
call_ended_mapping:
{{ toYaml . | indent 2 }}
{{- end }}
admin_show_personal_data: {{ $c.adminShowPersonalData }}
handlers:
{{- if .Values.handlers }}
{{ toYaml .Values.handlers | indent 2 }}
{{- else }} []
{{- end }}
{{- end }}

{{/* Environment shared by the receiver, its check-config init container and the migration Job. */}}
{{- define "kallglot-receiver.env" -}}
- name: RECEIVER_CONFIG_FILE
  value: /etc/kallglot-receiver/config.yaml
{{- if include "kallglot-receiver.isPostgres" . }}
{{- if .Values.database.postgresql.existingSecret }}
- name: RECEIVER_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.postgresql.existingSecret }}
      key: {{ .Values.database.postgresql.existingSecretKey }}
{{- end }}
{{- else }}
- name: RECEIVER_DATABASE_URL
  value: {{ printf "sqlite:///%s" .Values.database.sqlite.path | quote }}
{{- end }}
- name: RECEIVER_MIGRATE_ON_START
  value: {{ ternary "false" "true" (eq (include "kallglot-receiver.migrationJob" .) "true") | quote }}
- name: RECEIVER_PORT
  value: {{ .Values.service.port | quote }}
- name: RECEIVER_ADMIN_PORT
  value: {{ .Values.service.adminPort | quote }}
- name: RECEIVER_BODY_TIMEOUT_SECONDS
  value: {{ .Values.config.bodyTimeoutSeconds | quote }}
- name: RECEIVER_MAX_CONNECTIONS
  value: {{ .Values.config.maxConnections | int64 | quote }}
{{- include "kallglot-receiver.secretEnv" . }}
{{- if kindIs "map" .Values.extraEnv }}
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- else if .Values.extraEnv }}
{{ toYaml .Values.extraEnv }}
{{- end }}
{{- end }}

{{/* The setting secrets present in the Secret: given to the receiver as NAME_FILE (files), not NAME. */}}
{{- define "kallglot-receiver.fileSecretKeys" -}}
{{- $s := .Values.secrets -}}
{{- $keys := list -}}
{{- if $s.existingSecret -}}
{{- $keys = $s.existingSecretFileKeys -}}
{{- else -}}
{{- if $s.apiKey }}{{ $keys = append $keys "KALLGLOT_API_KEY" }}{{ end -}}
{{- if $s.webhookSecrets }}{{ $keys = append $keys "KALLGLOT_WEBHOOK_SECRETS" }}{{ end -}}
{{- if $s.inboundSecrets }}{{ $keys = append $keys "RECEIVER_INBOUND_SECRETS" }}{{ end -}}
{{- if $s.adminToken }}{{ $keys = append $keys "RECEIVER_ADMIN_TOKEN" }}{{ end -}}
{{- if $s.sentryDsn }}{{ $keys = append $keys "SENTRY_DSN" }}{{ end -}}
{{- if and (include "kallglot-receiver.isPostgres" .) .Values.database.postgresql.url }}{{ $keys = append $keys "RECEIVER_DATABASE_URL" }}{{ end -}}
{{- if $s.twilioAuthToken }}{{ $keys = append $keys "RECEIVER_TWILIO_AUTH_TOKEN" }}{{ end -}}
{{- if $s.inboundBearerToken }}{{ $keys = append $keys "RECEIVER_INBOUND_BEARER_TOKEN" }}{{ end -}}
{{- end -}}
{{- join "," $keys -}}
{{- end }}

{{/* Secrets as files (mountAsFiles): NAME_FILE for each setting secret, and only the handler
     credentials (referenced as ${VAR} in the handlers list) as plain variables. */}}
{{- define "kallglot-receiver.secretEnv" -}}
{{- $s := .Values.secrets -}}
{{- if $s.mountAsFiles }}
{{- range $key := splitList "," (include "kallglot-receiver.fileSecretKeys" .) }}
{{- if $key }}
- name: {{ $key }}_FILE
  value: {{ printf "%s/%s" $s.mountPath $key | quote }}
{{- end }}
{{- end }}
{{- $envKeys := ternary $s.existingSecretEnvKeys (keys $s.handlerCredentials | sortAlpha) (not (empty $s.existingSecret)) }}
{{- if and (not $s.existingSecret) $s.telnyxPublicKey }}
{{- /* a public key: the setting has no _FILE form, so it is a variable read from the Secret */}}
{{- $envKeys = append $envKeys "RECEIVER_TELNYX_PUBLIC_KEY" }}
{{- end }}
{{- range $key := $envKeys }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "kallglot-receiver.secretName" $ }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- end }}

{{/* The pod volume holding the Secret's files (mountAsFiles). */}}
{{- define "kallglot-receiver.secretVolume" -}}
{{- if .Values.secrets.mountAsFiles }}
- name: secrets
  secret:
    secretName: {{ include "kallglot-receiver.secretName" . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* Validation: fail the render with a message an operator can act on. */}}
{{- define "kallglot-receiver.validate" -}}
{{- $v := .Values -}}
{{- if not (has $v.database.type (list "sqlite" "postgresql")) }}
{{- fail (printf "database.type must be sqlite or postgresql, not %q" $v.database.type) }}
{{- end }}
{{- if eq $v.database.type "sqlite" }}
{{- if gt (int $v.replicaCount) 1 }}
{{- fail (printf "\n\nSQLite supports exactly one replica (replicaCount=%d): it is a single-writer file on a ReadWriteOnce volume.\nSet replicaCount=1, or use PostgreSQL: --set database.type=postgresql --set database.postgresql.url=postgresql://… (or database.postgresql.existingSecret)." (int $v.replicaCount)) }}
{{- end }}
{{- if $v.autoscaling.enabled }}
{{- fail "\n\nautoscaling.enabled needs PostgreSQL: SQLite supports exactly one replica. Set database.type=postgresql or disable autoscaling." }}
{{- end }}
{{- if not $v.persistence.enabled }}
{{- fail "\n\nSQLite needs persistence.enabled=true: without a persistent volume every restart loses calls and can spend a second credit on them." }}
{{- end }}
{{- else }}
{{- if not (or $v.database.postgresql.url $v.database.postgresql.existingSecret $v.secrets.existingSecret) }}
{{- fail "\n\ndatabase.type=postgresql needs the URL: set database.postgresql.url, database.postgresql.existingSecret, or put RECEIVER_DATABASE_URL in secrets.existingSecret." }}
{{- end }}
{{- end }}
{{- $drain := add (int $v.config.shutdownGraceSeconds) (int $v.preStopSleepSeconds) }}
{{- if le (int $v.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "\n\nterminationGracePeriodSeconds (%d) must exceed config.shutdownGraceSeconds + preStopSleepSeconds (%d): otherwise the kubelet kills pods mid-drain." (int $v.terminationGracePeriodSeconds) $drain) }}
{{- end }}
{{- if and $v.sidecar.enabled (not $v.sidecar.containers) }}
{{- fail "\n\nsidecar.enabled needs sidecar.containers: the telephony platform's containers that share the pod." }}
{{- end }}
{{- end }}

{{/* Env, secrets, mounts, resources and security context of the receiver's containers. */}}
{{- define "kallglot-receiver.containerCommon" -}}
env:
  {{- include "kallglot-receiver.env" . | nindent 2 }}
{{- if or (not .Values.secrets.mountAsFiles) .Values.extraEnvFrom }}
envFrom:
  {{- if not .Values.secrets.mountAsFiles }}
  - secretRef:
      name: {{ include "kallglot-receiver.secretName" . }}
  {{- end }}
  {{- with .Values.extraEnvFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
volumeMounts:
  - name: config
    mountPath: /etc/kallglot-receiver
    readOnly: true
  {{- if .Values.secrets.mountAsFiles }}
  - name: secrets
    mountPath: {{ .Values.secrets.mountPath }}
    readOnly: true
  {{- end }}
  - name: tmp
    mountPath: /tmp
  {{- if not (include "kallglot-receiver.isPostgres" .) }}
  - name: data
    mountPath: /data
  {{- end }}
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end }}
