{{/* ---------------------------------------------------------------- names ---- */}}
{{- define "zhongtai.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "zhongtai.fullname" -}}
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

{{/* Kubernetes name of a component key (data_hub -> data-hub). */}}
{{- define "zhongtai.componentName" -}}
{{- . | replace "_" "-" -}}
{{- end -}}

{{/* Object name for a component: dict "root" $ "component" "data_hub" [ "suffix" "-headless" ]. */}}
{{- define "zhongtai.componentFullname" -}}
{{- $base := include "zhongtai.fullname" .root -}}
{{- $c := include "zhongtai.componentName" .component -}}
{{- printf "%s-%s%s" ($base | trunc (int (sub 52 (len $c))) | trimSuffix "-") $c (default "" .suffix) | trimSuffix "-" -}}
{{- end -}}

{{/*
  DNS-safe part of a KafkaTopic object name for a topic name. Long names keep 31 chars plus a
  hash, so the object name stays <= 63 chars and distinct topics keep distinct objects
  (componentFullname shortens the release part, never this part).
*/}}
{{- define "zhongtai.topicSlug" -}}
{{- $slug := . | lower | replace "." "-" | replace "_" "-" -}}
{{- if gt (len $slug) 40 -}}
{{- printf "%s-%s" ($slug | trunc 31 | trimSuffix "-") (sha256sum . | trunc 8) -}}
{{- else -}}
{{- $slug -}}
{{- end -}}
{{- end -}}

{{- define "zhongtai.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "zhongtai.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* --------------------------------------------------------------- labels ---- */}}
{{- define "zhongtai.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zhongtai.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "zhongtai.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "zhongtai.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: zhongtai
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: dict "root" $ "component" "customer". */}}
{{- define "zhongtai.componentSelectorLabels" -}}
{{ include "zhongtai.selectorLabels" .root }}
app.kubernetes.io/component: {{ include "zhongtai.componentName" .component }}
{{- end -}}

{{- define "zhongtai.componentLabels" -}}
{{ include "zhongtai.labels" .root }}
app.kubernetes.io/component: {{ include "zhongtai.componentName" .component }}
{{- end -}}

{{/* ---------------------------------------------------------------- image ---- */}}
{{- define "zhongtai.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* ----------------------------------------------------- components/ports ---- */}}
{{/* gRPC components are the ones with a ports.grpc entry; the gateway serves ports.http. */}}
{{- define "zhongtai.grpcComponents" -}}
{{- range $key := list "customer" "product" "data_hub" }}
{{- if (index $.Values.components $key).enabled }}{{ $key }} {{ end }}
{{- end -}}
{{- end -}}

{{/* The ZT_ variable holding a component's database URL key in the Secret. */}}
{{- define "zhongtai.databaseUrlKey" -}}
{{- $keys := .root.Values.secrets.keys -}}
{{- if eq .component "customer" -}}{{ $keys.customerDatabaseUrl }}
{{- else if eq .component "product" -}}{{ $keys.productDatabaseUrl }}
{{- else if eq .component "data_hub" -}}{{ $keys.dataHubDatabaseUrl }}
{{- else if eq .component "gateway" -}}{{ $keys.gatewayDatabaseUrl }}
{{- end -}}
{{- end -}}

{{/* gRPC target of a component: explicit override, else dns:/// headless, else the ClusterIP Service. */}}
{{- define "zhongtai.serviceTarget" -}}
{{- $root := .root -}}
{{- $override := index $root.Values.config.serviceTargets .component -}}
{{- $port := (index $root.Values.components .component).ports.grpc -}}
{{- if $override -}}
{{- $override -}}
{{- else if $root.Values.headlessServices.enabled -}}
{{- printf "dns:///%s.%s.svc.%s:%v" (include "zhongtai.componentFullname" (dict "root" $root "component" .component "suffix" "-headless")) $root.Release.Namespace $root.Values.clusterDomain $port -}}
{{- else -}}
{{- printf "%s.%s.svc.%s:%v" (include "zhongtai.componentFullname" (dict "root" $root "component" .component)) $root.Release.Namespace $root.Values.clusterDomain $port -}}
{{- end -}}
{{- end -}}

{{/* ------------------------------------------------------------- secrets ---- */}}
{{- define "zhongtai.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- printf "%s-dev" (include "zhongtai.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "zhongtai.jwksConfigMapName" -}}
{{- default (printf "%s-jwks" (include "zhongtai.fullname" .)) .Values.config.auth.jwks.existingConfigMap -}}
{{- end -}}

{{/* ---------------------------------------------------- validation guard ---- */}}
{{/* Included by every template: fails the render on unsafe or inconsistent values. */}}
{{- define "zhongtai.validate" -}}
{{- $v := .Values -}}
{{- if and $v.devSecrets.enabled (eq $v.environment "prod") -}}
{{- fail "devSecrets.enabled=true is refused with environment=prod: put credentials in a Secret you manage and set secrets.existingSecret" -}}
{{- end -}}
{{- if and $v.devSecrets.enabled $v.secrets.existingSecret -}}
{{- fail "set either secrets.existingSecret or devSecrets.enabled, not both" -}}
{{- end -}}
{{- if not (or $v.devSecrets.enabled $v.secrets.existingSecret) -}}
{{- fail (printf "no credentials source: set secrets.existingSecret to a Secret with keys %s, %s, %s, %s, %s, %s (optional %s; and %s for auth.mode=hs256); or devSecrets.enabled=true on a dev cluster" $v.secrets.keys.customerDatabaseUrl $v.secrets.keys.productDatabaseUrl $v.secrets.keys.dataHubDatabaseUrl $v.secrets.keys.piiKey $v.secrets.keys.piiKeyId $v.secrets.keys.blindIndexKey $v.secrets.keys.piiOldKeys $v.secrets.keys.authHs256Secret) -}}
{{- end -}}
{{- if and (eq $v.environment "prod") (eq $v.config.auth.mode "hs256") -}}
{{- fail "environment=prod refuses config.auth.mode=hs256: use rs256 with config.auth.jwks" -}}
{{- end -}}
{{- if and (eq $v.config.auth.mode "rs256") (not (or $v.config.auth.jwks.existingConfigMap $v.config.auth.jwks.inline)) -}}
{{- fail "config.auth.mode=rs256 needs config.auth.jwks.existingConfigMap or config.auth.jwks.inline" -}}
{{- end -}}
{{- if and $v.config.auth.jwks.existingConfigMap $v.config.auth.jwks.inline -}}
{{- fail "set either config.auth.jwks.existingConfigMap or config.auth.jwks.inline, not both" -}}
{{- end -}}
{{- $needed := add $v.shutdown.preStopSleepSeconds $v.config.grpc.shutdownGraceSeconds -}}
{{- if le (int $v.shutdown.terminationGracePeriodSeconds) (int $needed) -}}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%v) must exceed shutdown.preStopSleepSeconds + config.grpc.shutdownGraceSeconds (%v)" $v.shutdown.terminationGracePeriodSeconds $needed) -}}
{{- end -}}
{{- if and $v.components.product.enabled (not $v.components.customer.enabled) (not $v.config.serviceTargets.customer) -}}
{{- fail "components.product needs the customer service: enable components.customer or set config.serviceTargets.customer" -}}
{{- end -}}
{{- if and $v.ingress.enabled (not $v.components.gateway.enabled) -}}
{{- fail "ingress.enabled needs components.gateway.enabled" -}}
{{- end -}}
{{- range $caller := list "product" "data_hub" }}
{{- if and (index $v.components $caller).enabled (or (eq $v.environment "prod") (eq $v.config.auth.mode "rs256")) (not (index $v.config $caller).serviceToken.volume) -}}
{{- fail (printf "components.%s calls the customer service with its own token: with environment=prod or config.auth.mode=rs256 set config.%s.serviceToken.volume (a volume holding the token file your platform keeps fresh, e.g. {secret: {secretName: zhongtai-%s-token}}); ZT_SERVICE_TOKEN_FILE points into it" $caller $caller (replace "_" "-" $caller)) -}}
{{- end -}}
{{- end -}}
{{- if and $v.components.data_hub.enabled (not $v.components.customer.enabled) (not $v.config.serviceTargets.customer) -}}
{{- fail "components.data_hub asks the customer service whether a customer exists when it has no view (ADR 0008): enable components.customer or set config.serviceTargets.customer" -}}
{{- end -}}
{{- $gw := $v.config.gateway -}}
{{- if gt (float64 $gw.defaultTimeoutSeconds) (float64 $gw.maxTimeoutSeconds) -}}
{{- fail "config.gateway.defaultTimeoutSeconds must not exceed config.gateway.maxTimeoutSeconds" -}}
{{- end -}}
{{- if and (eq $v.environment "prod") (has "*" $gw.corsOrigins) -}}
{{- fail "environment=prod refuses config.gateway.corsOrigins \"*\": list the exact origins" -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------- pod pieces ---- */}}
{{/* Non-secret configuration as a flat map (ConfigMap data, and the migration Jobs' env). */}}
{{- define "zhongtai.configData" -}}
{{- $v := .Values -}}
ZT_ENVIRONMENT: {{ $v.environment | quote }}
ZT_LOG_LEVEL: {{ $v.config.logLevel | quote }}
ZT_KAFKA_BOOTSTRAP_SERVERS: {{ $v.config.kafka.bootstrapServers | quote }}
ZT_KAFKA_TOPIC_PARTITIONS: {{ $v.config.kafka.topicPartitions | quote }}
ZT_KAFKA_REPLICATION_FACTOR: {{ $v.config.kafka.replicationFactor | quote }}
ZT_KAFKA_TOPIC_PREFIX: {{ $v.config.kafka.topicPrefix | default "" | quote }}
ZT_GRPC_HOST: {{ $v.config.grpc.host | quote }}
ZT_GRPC_SHUTDOWN_GRACE_S: {{ $v.config.grpc.shutdownGraceSeconds | quote }}
ZT_GRPC_MAX_CONCURRENT_RPCS: {{ $v.config.grpc.maxConcurrentRpcs | int | quote }}
ZT_DATABASE_POOL_SIZE: {{ $v.config.database.poolSize | int | quote }}
{{- if $v.config.metrics.port }}
ZT_METRICS_PORT: {{ $v.config.metrics.port | quote }}
{{- end }}
ZT_AUTH_ISSUER: {{ $v.config.auth.issuer | quote }}
ZT_AUTH_AUDIENCE: {{ $v.config.auth.audience | quote }}
{{- if eq $v.config.auth.mode "rs256" }}
ZT_AUTH_JWKS_FILE: {{ printf "/etc/zhongtai/jwks/%s" $v.config.auth.jwks.key | quote }}
{{- end }}
{{- range $key := list "customer" "product" "data_hub" }}
{{- if or (index $v.components $key).enabled (index $v.config.serviceTargets $key) }}
{{ printf "ZT_%s_TARGET" (ternary "DATAHUB" (upper $key) (eq $key "data_hub")) }}: {{ include "zhongtai.serviceTarget" (dict "root" $ "component" $key) | quote }}
{{- end }}
{{- end }}
{{- if $v.config.otel.endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ $v.config.otel.endpoint | quote }}
{{- end }}
{{- if $v.config.otel.sampler }}
OTEL_TRACES_SAMPLER: {{ $v.config.otel.sampler | quote }}
OTEL_TRACES_SAMPLER_ARG: {{ $v.config.otel.samplerArg | quote }}
{{- end }}
ZT_OTEL_CONSOLE: {{ $v.config.otel.console | quote }}
{{- range $k, $val := $v.config.extra }}
{{ $k }}: {{ $val | quote }}
{{- end }}
{{- end -}}

{{/* Secret-backed env of one component: dict "root" $ "component" "customer". */}}
{{- define "zhongtai.secretEnv" -}}
{{- $root := .root -}}
{{- $keys := $root.Values.secrets.keys -}}
{{- $secret := include "zhongtai.secretName" $root -}}
{{- $gateway := $root.Values.config.gateway }}
{{- if or (ne .component "gateway") (eq $gateway.idempotency.store "database") }}
- name: ZT_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "zhongtai.databaseUrlKey" . }}
{{- end }}
{{- /*
  The customer migration Job gets the PII keys too: `migrate customer` loads CustomerSettings,
  which refuses to start without them when ZT_ENVIRONMENT=prod.
*/}}
{{- if eq .component "customer" }}
- name: ZT_PII_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.piiKey }}
- name: ZT_PII_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.piiKeyId }}
- name: ZT_PII_OLD_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.piiOldKeys }}
      optional: true
- name: ZT_BLIND_INDEX_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.blindIndexKey }}
{{- end }}
{{- if eq .component "data_hub" }}
- name: ZT_DATAHUB_AUDIT_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.dataHubAuditKey }}
      # (the hub refuses to start without it when environment=prod, naming the variable)
      optional: true
{{- end }}
{{- if and (eq .component "gateway") (eq $gateway.quotas.store "redis") (not .migrate) }}
- name: ZT_QUOTA_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.quotaRedisUrl }}
{{- end }}
{{- if and (eq $root.Values.config.auth.mode "hs256") (not .migrate) }}
- name: ZT_AUTH_HS256_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.authHs256Secret }}
{{- end }}
{{- end -}}

{{/*
  Settings only one component reads, as that container's env (shared ones are in the
  ConfigMap): dict "root" $ "component" "product" [ "migrate" true ]. Rendered for the
  migration Jobs too, since `migrate <c>` validates the same settings class at start-up.
  Integers go through `int`: Helm reads YAML numbers as float64 and would print 1e+06.
*/}}
{{- define "zhongtai.componentEnv" -}}
{{- $v := .root.Values.config -}}
{{- if eq .component "customer" }}
- name: ZT_RISK_ASSESSMENT_VALIDITY_DAYS
  value: {{ $v.customer.riskAssessmentValidityDays | int | quote }}
- name: ZT_BUSINESS_TIMEZONE
  value: {{ $v.customer.businessTimezone | quote }}
{{- else if eq .component "product" }}
- name: ZT_CUSTOMER_DEADLINE_S
  value: {{ $v.product.customerDeadlineSeconds | toString | quote }}
- name: ZT_PRODUCT_ELIGIBILITY_REPLICA
  value: {{ $v.product.eligibilityReplica.enabled | quote }}
- name: ZT_PRODUCT_REPLICA_GROUP_ID
  value: {{ $v.product.eligibilityReplica.groupId | quote }}
- name: ZT_PRODUCT_REPLICA_MAX_STALENESS_S
  value: {{ $v.product.eligibilityReplica.maxStalenessSeconds | toString | quote }}
- name: ZT_PRODUCT_REPLICA_PROBE_INTERVAL_S
  value: {{ $v.product.eligibilityReplica.probeIntervalSeconds | toString | quote }}
{{- include "zhongtai.serviceTokenEnv" (dict "root" .root "caller" $v.product) }}
{{- else if eq .component "data_hub" }}
- name: ZT_DATAHUB_GROUP_ID
  value: {{ $v.data_hub.groupId | quote }}
{{- with $v.data_hub.rules }}
- name: ZT_DATAHUB_RULES
  value: {{ toJson . | quote }}
{{- end }}
- name: ZT_DATAHUB_MAX_ATTEMPTS
  value: {{ $v.data_hub.maxAttempts | int | quote }}
- name: ZT_DATAHUB_PUBLISH_VIEWS
  value: {{ $v.data_hub.publishViews | quote }}
- name: ZT_DATAHUB_REFRESH_INTERVAL_S
  value: {{ $v.data_hub.refreshIntervalSeconds | toString | quote }}
- name: ZT_DATAHUB_SESSION_TIMEOUT_MS
  value: {{ $v.data_hub.sessionTimeoutMs | int | quote }}
{{- if and $v.data_hub.staticMembership (not .migrate) }}
- name: ZT_DATAHUB_GROUP_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
- name: ZT_DATAHUB_CUSTOMER_DEADLINE_S
  value: {{ $v.data_hub.customerDeadlineSeconds | toString | quote }}
- name: ZT_DATAHUB_MODEL_PATH
  value: {{ $v.data_hub.modelPath | quote }}
{{- include "zhongtai.serviceTokenEnv" (dict "root" .root "caller" $v.data_hub) }}
{{- else if eq .component "gateway" }}
- name: ZT_HTTP_HOST
  value: {{ $v.http.host | quote }}
- name: ZT_HTTP_SERVER
  value: {{ $v.gateway.httpServer | quote }}
- name: ZT_DEFAULT_TIMEOUT_S
  value: {{ $v.gateway.defaultTimeoutSeconds | toString | quote }}
- name: ZT_MAX_TIMEOUT_S
  value: {{ $v.gateway.maxTimeoutSeconds | toString | quote }}
- name: ZT_RETRY_ATTEMPTS
  value: {{ $v.gateway.retryAttempts | int | quote }}
- name: ZT_MAX_BODY_BYTES
  value: {{ $v.gateway.maxBodyBytes | int | quote }}
- name: ZT_CORS_ORIGINS
  value: {{ join "," $v.gateway.corsOrigins | quote }}
{{- $oidc := $v.gateway.consoleOidc }}
- name: ZT_CONSOLE_OIDC_AUTHORIZATION_ENDPOINT
  value: {{ $oidc.authorizationEndpoint | quote }}
- name: ZT_CONSOLE_OIDC_TOKEN_ENDPOINT
  value: {{ $oidc.tokenEndpoint | quote }}
- name: ZT_CONSOLE_OIDC_CLIENT_ID
  value: {{ $oidc.clientId | quote }}
- name: ZT_CONSOLE_OIDC_SCOPE
  value: {{ $oidc.scope | quote }}
{{- $q := $v.gateway.quotas }}
- name: ZT_QUOTA_READS_RPS
  value: {{ $q.readsRps | toString | quote }}
- name: ZT_QUOTA_READS_BURST
  value: {{ $q.readsBurst | int | quote }}
- name: ZT_QUOTA_WRITES_RPS
  value: {{ $q.writesRps | toString | quote }}
- name: ZT_QUOTA_WRITES_BURST
  value: {{ $q.writesBurst | int | quote }}
- name: ZT_QUOTA_ADMIN_RPS
  value: {{ $q.adminRps | toString | quote }}
- name: ZT_QUOTA_ADMIN_BURST
  value: {{ $q.adminBurst | int | quote }}
- name: ZT_QUOTA_MAX_CLIENTS
  value: {{ $q.maxClients | int | quote }}
- name: ZT_IDEMPOTENCY_STORE
  value: {{ $v.gateway.idempotency.store | quote }}
- name: ZT_IDEMPOTENCY_TTL_S
  value: {{ $v.gateway.idempotency.ttlSeconds | toString | quote }}
- name: ZT_IDEMPOTENCY_MAX_ENTRIES
  value: {{ $v.gateway.idempotency.maxEntries | int | quote }}
- name: ZT_ACCESS_LOG
  value: {{ $v.gateway.accessLog | quote }}
{{- with $v.gateway.backends }}
- name: ZT_BACKENDS
  value: {{ toJson . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
  The ZT_SERVICE_* env of a service that calls the customer service as itself (product, data
  hub): dict "root" $ "caller" .Values.config.<component>.
*/}}
{{- define "zhongtai.serviceTokenEnv" -}}
{{- $c := .caller }}
- name: ZT_SERVICE_CLIENT_ID
  value: {{ $c.serviceClientId | quote }}
- name: ZT_SERVICE_TOKEN_SCOPES
  value: {{ $c.serviceTokenScopes | quote }}
- name: ZT_SERVICE_TOKEN_TTL_S
  value: {{ $c.serviceTokenTtlSeconds | int | quote }}
{{- if $c.serviceToken.volume }}
- name: ZT_SERVICE_TOKEN_FILE
  value: {{ printf "%s/%s" (include "zhongtai.serviceTokenDir" .root) $c.serviceToken.file | quote }}
{{- end }}
{{- end -}}

{{/* Where a calling service's token volume (product, data hub) is mounted. */}}
{{- define "zhongtai.serviceTokenDir" -}}
/var/run/zhongtai/service-token
{{- end -}}

{{- define "zhongtai.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "zhongtai.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end -}}

{{- define "zhongtai.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ------------------------------------------------------ network policy ---- */}}
{{- define "zhongtai.netpol.dnsEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
  {{- with .Values.networkPolicy.dns.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* Egress rule from {ports, cidrs, peers}; no cidrs and no peers = any destination. */}}
{{- define "zhongtai.netpol.egressTo" -}}
- ports:
    {{- range .ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- if or .cidrs .peers }}
  to:
    {{- range .cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- with .peers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end -}}

{{/* ----------------------------------------------------------- helm test ---- */}}
{{- define "zhongtai.test.podSpec" -}}
restartPolicy: Never
automountServiceAccountToken: false
enableServiceLinks: false
{{- with (include "zhongtai.imagePullSecrets" . | trim) }}{{ . | nindent 0 }}{{ end }}
securityContext:
  {{- include "zhongtai.podSecurityContext" . | nindent 2 }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 16Mi
{{- end -}}

{{- define "zhongtai.test.container" -}}
env:
  - name: HOME
    value: /tmp
  - name: PYTHONDONTWRITEBYTECODE
    value: "1"
resources:
  {{- toYaml .Values.tests.resources | nindent 2 }}
securityContext:
  {{- include "zhongtai.containerSecurityContext" . | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end -}}
