{{/* Names and labels. */}}
{{- define "shardbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shardbridge.fullname" -}}
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

{{- define "shardbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shardbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shardbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "shardbridge.labels" -}}
helm.sh/chart: {{ include "shardbridge.chart" . }}
{{ include "shardbridge.selectorLabels" . }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "shardbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "shardbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "shardbridge.configMapName" -}}
{{- printf "%s-config" (include "shardbridge.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
shardbridge.terminationGracePeriodSeconds: argument: shardbridge's values.
preStopSleepSeconds + ceil(shutdownTimeoutMs / 1000) + terminationGraceMarginSeconds.
*/}}
{{- define "shardbridge.terminationGracePeriodSeconds" -}}
{{- $w := .worker -}}
{{- add (int64 $w.preStopSleepSeconds) (div (add (int64 $w.shutdownTimeoutMs) 999) 1000) (int64 $w.terminationGraceMarginSeconds) -}}
{{- end }}

{{/*
shardbridge.image: argument: dict "values" <shardbridge values> "appVersion" <default tag>.
*/}}
{{- define "shardbridge.image" -}}
{{- $img := .values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (toString (default .appVersion $img.tag)) -}}
{{- end -}}
{{- end }}

{{/*
shardbridge.configChecksum: argument: shardbridge's values. The sha256 of connectors.toml, for
a pod annotation that rolls the pods when the configuration changes.
*/}}
{{- define "shardbridge.configChecksum" -}}
{{- include "shardbridge.connectorsToml" . | sha256sum -}}
{{- end }}

{{/*
shardbridge.container: the shardbridge container as a list item. Argument: a dict with
  values        shardbridge's values
  appVersion    the image tag when values.image.tag is empty
  name          container name
  portName      name of the metrics port (unique in the pod)
  configVolume  name of the volume holding connectors.toml
  tmpVolume     name of the emptyDir mounted at /tmp
  readiness     whether to add the readiness probe (values.probes.readiness.enabled too)
*/}}
{{- define "shardbridge.container" -}}
{{- $v := .values -}}
{{- $port := int $v.worker.port -}}
{{- $readiness := .readiness -}}
- name: {{ .name }}
  image: {{ include "shardbridge.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args: ["run", "--config", "/etc/shardbridge/connectors.toml"]
  env:
    # Lease owner name: the pod's name, unique in the fleet.
    - name: SHARDBRIDGE__WORKER__ID
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: RUST_LOG
      value: {{ $v.logLevel | quote }}
    {{- with $v.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: {{ .portName }}
      containerPort: {{ $port }}
      protocol: TCP
  {{- with $v.probes.startup }}
  {{- if .enabled }}
  startupProbe:
    httpGet:
      path: /healthz
      port: {{ $port }}
    periodSeconds: {{ .periodSeconds }}
    timeoutSeconds: {{ .timeoutSeconds }}
    failureThreshold: {{ .failureThreshold }}
  {{- end }}
  {{- end }}
  {{- with $v.probes.liveness }}
  {{- if .enabled }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: {{ $port }}
    initialDelaySeconds: {{ .initialDelaySeconds }}
    periodSeconds: {{ .periodSeconds }}
    timeoutSeconds: {{ .timeoutSeconds }}
    failureThreshold: {{ .failureThreshold }}
  {{- end }}
  {{- end }}
  {{- with $v.probes.readiness }}
  {{- if and .enabled $readiness }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: {{ $port }}
    initialDelaySeconds: {{ .initialDelaySeconds }}
    periodSeconds: {{ .periodSeconds }}
    timeoutSeconds: {{ .timeoutSeconds }}
    failureThreshold: {{ .failureThreshold }}
  {{- end }}
  {{- end }}
  {{- if gt (int $v.worker.preStopSleepSeconds) 0 }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", "{{ int $v.worker.preStopSleepSeconds }}"]
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: {{ .configVolume }}
      mountPath: /etc/shardbridge
      readOnly: true
    - name: {{ .tmpVolume }}
      mountPath: /tmp
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
