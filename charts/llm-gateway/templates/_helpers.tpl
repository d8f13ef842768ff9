{{/* Chart name. */}}
{{- define "llm-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name (63 chars max, DNS-1123). */}}
{{- define "llm-gateway.fullname" -}}
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

{{- define "llm-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "llm-gateway.labels" -}}
helm.sh/chart: {{ include "llm-gateway.chart" . }}
{{ include "llm-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ (.Values.image.tag | default .Chart.AppVersion) | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llm-gateway
catalyst.openova.io/blueprint: bp-llm-gateway
{{- end }}

{{/* Labels for the helm test pod: not matched by the Service, PDB or NetworkPolicy selectors. */}}
{{- define "llm-gateway.testLabels" -}}
helm.sh/chart: {{ include "llm-gateway.chart" . }}
app.kubernetes.io/name: {{ include "llm-gateway.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: test
{{- end }}

{{- define "llm-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llm-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "llm-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llm-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "llm-gateway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Name of the Secret the External Secrets Operator writes. */}}
{{- define "llm-gateway.externalSecretName" -}}
{{- default (printf "%s-env" (include "llm-gateway.fullname" .)) .Values.externalSecret.targetName }}
{{- end }}

{{- define "llm-gateway.outboxClaimName" -}}
{{- default (printf "%s-outbox" (include "llm-gateway.fullname" .)) .Values.outbox.persistence.existingClaim }}
{{- end }}

{{- define "llm-gateway.configDir" -}}/etc/llm-gateway{{- end }}

{{/*
Requests in flight per pod: .Values.maxInFlight, else what the memory limit holds at
.Values.memoryPerRequestKiB each above a 96 MiB base (0: no cap).
*/}}
{{- define "llm-gateway.maxInFlight" -}}
{{- if .Values.maxInFlight -}}
{{- .Values.maxInFlight -}}
{{- else -}}
{{- $mem := toString (dig "limits" "memory" "" .Values.resources) -}}
{{- $mib := 0 -}}
{{- if hasSuffix "Gi" $mem -}}{{- $mib = mul (int (trimSuffix "Gi" $mem)) 1024 -}}
{{- else if hasSuffix "Mi" $mem -}}{{- $mib = int (trimSuffix "Mi" $mem) -}}
{{- end -}}
{{- if gt $mib 96 -}}{{- div (mul (sub $mib 96) 1024) (int .Values.memoryPerRequestKiB) -}}{{- else -}}0{{- end -}}
{{- end -}}
{{- end }}

{{/*
The gateway config (gateway.yaml): .Values.config, plus server.listen, plus the
providers and model deployments described by .Values.backends.
*/}}
{{- define "llm-gateway.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $server := get $cfg "server" | default dict }}
{{- $_ := set $server "listen" (printf "0.0.0.0:%d" (int .Values.service.port)) }}
{{- if and .Values.management.enabled (not (hasKey $server "management_listen")) }}
{{- $_ := set $server "management_listen" (printf "0.0.0.0:%d" (int .Values.management.port)) }}
{{- end }}
{{- $maxInFlight := include "llm-gateway.maxInFlight" . | int }}
{{- if and (gt $maxInFlight 0) (not (hasKey $server "max_in_flight")) }}
{{- $_ := set $server "max_in_flight" $maxInFlight }}
{{- end }}
{{- $_ := set $cfg "server" $server }}
{{- $providers := get $cfg "providers" | default dict }}
{{- $models := get $cfg "models" | default dict }}
{{- $backends := list }}
{{- range $b := .Values.backends.vllm }}
{{- $p := dict "vendor" "vllm" "base_url" (required "backends.vllm[].baseUrl is required" $b.baseUrl) }}
{{- if $b.apiKeyEnv }}{{- $_ := set $p "api_key_env" $b.apiKeyEnv }}{{- else }}{{- $_ := set $p "auth" "none" }}{{- end }}
{{- $backends = append $backends (dict "name" $b.name "provider" $p "models" ($b.models | default dict)) }}
{{- end }}
{{- with .Values.backends.anthropic }}
{{- if .enabled }}
{{- $p := dict "vendor" "anthropic" "api_key_env" (required "backends.anthropic.apiKeyEnv is required" .apiKeyEnv) }}
{{- if .baseUrl }}{{- $_ := set $p "base_url" .baseUrl }}{{- end }}
{{- $backends = append $backends (dict "name" .name "provider" $p "models" (.models | default dict)) }}
{{- end }}
{{- end }}
{{- range $b := .Values.backends.openaiCompatible }}
{{- $p := dict }}
{{- if $b.vendor }}{{- $_ := set $p "vendor" $b.vendor }}{{- else }}{{- $_ := set $p "dialect" "openai" }}{{- end }}
{{- if $b.baseUrl }}{{- $_ := set $p "base_url" $b.baseUrl }}{{- else if not $b.vendor }}{{- fail (printf "backends.openaiCompatible[%s]: baseUrl or vendor is required" $b.name) }}{{- end }}
{{- if $b.apiKeyEnv }}{{- $_ := set $p "api_key_env" $b.apiKeyEnv }}{{- else if not $b.vendor }}{{- $_ := set $p "auth" "none" }}{{- end }}
{{- $backends = append $backends (dict "name" $b.name "provider" $p "models" ($b.models | default dict)) }}
{{- end }}
{{- range $b := $backends }}
{{- if hasKey $providers $b.name }}
{{- fail (printf "backends: provider %q is also defined in config.providers" $b.name) }}
{{- end }}
{{- $_ := set $providers $b.name $b.provider }}
{{- range $client, $upstream := $b.models }}
{{- $m := get $models $client | default dict }}
{{- $deps := get $m "deployments" | default list }}
{{- $_ := set $m "deployments" (append $deps (dict "provider" $b.name "model" $upstream)) }}
{{- $_ := set $models $client $m }}
{{- end }}
{{- end }}
{{- if $providers }}{{- $_ := set $cfg "providers" $providers }}{{- end }}
{{- if $models }}{{- $_ := set $cfg "models" $models }}{{- end }}
{{- /* Releases sharing one Valkey share nothing: every key under valkey.key_prefix, <namespace>/<release> unless set (a release name alone repeats across namespaces). */}}
{{- if or .Values.valkey.enabled (hasKey $cfg "valkey") }}
{{- $v := get $cfg "valkey" | default dict }}
{{- if not (hasKey $v "key_prefix") }}{{- $_ := set $v "key_prefix" (.Values.valkey.keyPrefix | default (printf "%s/%s" .Release.Namespace .Release.Name)) }}{{- end }}
{{- $_ := set $cfg "valkey" $v }}
{{- end }}
{{- /* The password the chart exports as VALKEY_PASSWORD reaches the gateway only through valkey.password_env. */}}
{{- if and .Values.valkey.enabled .Values.valkey.passwordSecret.name }}
{{- $v := get $cfg "valkey" | default dict }}
{{- if not (hasKey $v "password_env") }}{{- $_ := set $v "password_env" "VALKEY_PASSWORD" }}{{- end }}
{{- $_ := set $cfg "valkey" $v }}
{{- end }}
{{- /* auth: from .Values.auth, unless config.auth is written out by hand (keys mode only). */}}
{{- if hasKey $cfg "auth" }}
{{- if ne .Values.auth.mode "keys" }}
{{- fail "auth.mode and config.auth both set: configure auth in one place (auth.* renders config.auth)" }}
{{- end }}
{{- else }}
{{- $_ := set $cfg "auth" (include "llm-gateway.auth" . | fromYaml) }}
{{- end }}
{{- if .Values.admin.enabled }}
{{- if hasKey $cfg "admin" }}
{{- fail "admin.enabled and config.admin both set: configure the admin credential in one place" }}
{{- end }}
{{- $_ := set $cfg "admin" (dict "key_env" .Values.admin.keyEnv) }}
{{- end }}
{{- with .Values.requestLog.postgres }}
{{- if .enabled }}
{{- $rl := dict "url_env" "REQUEST_LOG_DATABASE_URL" "schema" .schema "retention_days" (int .retentionDays) "capture" .capture "when_full" .whenFull }}
{{- if .redact }}{{- $_ := set $rl "redact" .redact }}{{- end }}
{{- $_ := set $cfg "request_log" (dict "postgres" $rl) }}
{{- end }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* The gateway config's auth section (mode, key cache, OIDC) from .Values.auth. */}}
{{- define "llm-gateway.auth" -}}
{{- $a := dict "mode" .Values.auth.mode }}
{{- with .Values.auth.keyCacheTtl }}{{- $_ := set $a "key_cache_ttl" . }}{{- end }}
{{- if ne .Values.auth.mode "keys" }}
{{- $kc := .Values.auth.keycloak }}
{{- $o := dict "issuer_url" $kc.issuerUrl "audience" $kc.audience "jwks_url" (include "llm-gateway.jwksUrl" .) "team_claim" $kc.teamClaim }}
{{- with $kc.teams }}{{- $_ := set $o "teams" . }}{{- end }}
{{- with $kc.algorithms }}{{- $_ := set $o "algorithms" . }}{{- end }}
{{- with $kc.leeway }}{{- $_ := set $o "leeway" . }}{{- end }}
{{- with $kc.refresh }}{{- $_ := set $o "refresh" . }}{{- end }}
{{- with $kc.limits }}{{- $_ := set $o "limits" . }}{{- end }}
{{- $_ := set $a "oidc" $o }}
{{- end }}
{{- toYaml $a }}
{{- end }}

{{/*
How many replicas share the limits (LLM_GATEWAY_REPLICAS): while Valkey is down under
fail-open each replica enforces limit / this. With the HPA, maxReplicas: the replicas
together never exceed a limit, however far they scale (fewer running replicas are then
stricter than needed until Valkey is back).
*/}}
{{- define "llm-gateway.limitReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ max 1 (int .Values.autoscaling.maxReplicas) }}{{ else }}{{ max 1 (int .Values.replicaCount) }}{{ end }}
{{- end }}

{{- define "llm-gateway.jwksUrl" -}}
{{- $kc := .Values.auth.keycloak }}
{{- if $kc.jwksUrl }}{{ $kc.jwksUrl }}{{ else }}{{ trimSuffix "/" $kc.issuerUrl }}/protocol/openid-connect/certs{{ end }}
{{- end }}

{{/* Fail early on values combinations the schema cannot express. */}}
{{- define "llm-gateway.validate" -}}
{{- if and (ne .Values.auth.mode "keys") (not .Values.auth.keycloak.issuerUrl) }}
{{- fail (printf "auth.mode %s needs auth.keycloak.issuerUrl" .Values.auth.mode) }}
{{- end }}
{{- if and (ne .Values.auth.mode "keys") (not .Values.auth.keycloak.audience) }}
{{- fail (printf "auth.mode %s needs auth.keycloak.audience" .Values.auth.mode) }}
{{- end }}
{{- if and .Values.admin.enabled (not (or .Values.admin.keySecret.name .Values.existingSecret .Values.externalSecret.enabled)) }}
{{- fail (printf "admin.enabled needs admin.keySecret.name (or %s in existingSecret / externalSecret)" .Values.admin.keyEnv) }}
{{- end }}
{{- if and .Values.valkey.enabled (not .Values.valkey.url) }}
{{- fail "valkey.enabled needs valkey.url" }}
{{- end }}
{{- if and .Values.openmeter.enabled (not .Values.openmeter.url) }}
{{- fail "openmeter.enabled needs openmeter.url" }}
{{- end }}
{{- with .Values.outbox }}
{{- if and (eq .type "pvc") (not .persistence.existingClaim) (has "ReadWriteOncePod" .persistence.accessModes) (or $.Values.autoscaling.enabled (gt (int $.Values.replicaCount) 1)) }}
{{- fail "outbox.persistence.accessModes: ReadWriteOncePod lets one pod mount the outbox claim, and there are several: use ReadWriteMany (each pod writes and locks its own directory in it)" }}
{{- end }}
{{- end }}
{{- if and .Values.otel.enabled (not .Values.otel.endpoint) }}
{{- fail "otel.enabled needs otel.endpoint" }}
{{- end }}
{{- if and .Values.externalSecret.enabled (not .Values.externalSecret.secretStoreRef.name) }}
{{- fail "externalSecret.enabled needs externalSecret.secretStoreRef.name" }}
{{- end }}
{{- if and .Values.externalSecret.enabled (not (or .Values.externalSecret.data .Values.externalSecret.dataFrom)) }}
{{- fail "externalSecret.enabled needs externalSecret.data or externalSecret.dataFrom" }}
{{- end }}
{{- end }}

{{/* The CloudNativePG Cluster of the request log (its app Secret is "<this>-app"). */}}
{{- define "llm-gateway.requestLogCluster" -}}
{{- printf "%s-pg" (include "llm-gateway.fullname" .) | trunc 50 | trimSuffix "-" }}
{{- end }}
