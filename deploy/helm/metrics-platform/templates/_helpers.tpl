{{/* Names and labels shared by every object of the chart. */}}
{{- define "mp.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mp.labels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "kafka") */}}
{{- define "mp.selector" -}}
app.kubernetes.io/name: {{ default .ctx.Chart.Name .ctx.Values.nameOverride }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mp.image" -}}
{{ .repository }}:{{ .tag }}
{{- end -}}

{{/* The Kafka bootstrap list as every client dials it. */}}
{{- define "mp.kafkaBootstrap" -}}
{{- if .Values.kafka.enabled -}}
{{- $svc := printf "%s-kafka-headless" (include "mp.fullname" .) -}}
{{- $list := list -}}
{{- range $i := until (int .Values.kafka.replicas) -}}
{{- $list = append $list (printf "%s-kafka-%d.%s.%s.svc.%s:9092" (include "mp.fullname" $) $i $svc $.Release.Namespace $.Values.clusterDomain) -}}
{{- end -}}
{{- join "," $list -}}
{{- else -}}
{{- required "kafka.externalBootstrapServers is required when kafka.enabled=false" .Values.kafka.externalBootstrapServers -}}
{{- end -}}
{{- end -}}

{{/* Fully qualified name of one ClickHouse pod: (dict "ctx" $ "shard" 0 "replica" 1) */}}
{{- define "mp.clickhouseHost" -}}
{{- printf "%s-clickhouse-%d-%d.%s-clickhouse-headless.%s.svc.%s" (include "mp.fullname" .ctx) (int .shard) (int .replica) (include "mp.fullname" .ctx) .ctx.Release.Namespace .ctx.Values.clusterDomain -}}
{{- end -}}

{{/* A secretKeyRef into the pre-created Secret. */}}
{{- define "mp.secretRef" -}}
valueFrom:
  secretKeyRef:
    name: {{ .ctx.Values.existingSecret }}
    key: {{ .key }}
{{- end -}}

{{/* Settings every platform process reads (migrations here; Dagster's values file repeats them). */}}
{{- define "mp.platformEnv" -}}
- name: CLICKHOUSE_HOST
  value: {{ include "mp.fullname" . }}-clickhouse
- name: CLICKHOUSE_PORT
  value: "8123"
- name: CLICKHOUSE_USER
  value: metrics_writer
- name: CLICKHOUSE_PASSWORD
  {{- include "mp.secretRef" (dict "ctx" . "key" "clickhouse-writer-password") | nindent 2 }}
- name: CLICKHOUSE_DATABASE
  value: {{ .Values.clickhouse.database }}
# A cluster: replicated tables (inside the Replicated database the Job creates), the servers of this cluster
# name for per-shard work, and the read database of Distributed tables for every reader.
- name: METRICS_PLATFORM_CLICKHOUSE_REPLICATED
  value: "true"
- name: METRICS_PLATFORM_CLUSTER_NAME
  value: {{ .Values.clickhouse.cluster }}
- name: METRICS_PLATFORM_CLICKHOUSE_READ_DATABASE
  value: {{ .Values.clickhouse.database }}_cluster
- name: METRICS_PLATFORM_KAFKA_BOOTSTRAP_SERVERS
  value: {{ include "mp.kafkaBootstrap" . | quote }}
- name: METRICS_PLATFORM_CLICKHOUSE_KAFKA_BROKERS
  value: {{ include "mp.kafkaBootstrap" . | quote }}
- name: METRICS_PLATFORM_SPANS_TOPIC
  value: {{ .Values.topics.spans }}
- name: METRICS_PLATFORM_EVENTS_TOPIC
  value: {{ .Values.topics.events }}
- name: METRICS_PLATFORM_KAFKA_PARTITIONS
  value: {{ .Values.topics.partitions | quote }}
- name: METRICS_PLATFORM_KAFKA_RETENTION_HOURS
  value: {{ .Values.topics.retentionHours | quote }}
- name: METRICS_PLATFORM_KAFKA_NUM_CONSUMERS
  value: {{ .Values.clickhouse.kafkaNumConsumers | quote }}
- name: METRICS_PLATFORM_RETENTION_DAYS
  value: {{ .Values.clickhouse.retentionDays | quote }}
- name: METRICS_PLATFORM_STATE_DIR
  value: /tmp/metrics-platform
{{- end -}}
