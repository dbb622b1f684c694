{{/*
Named templates for running shardbridge as a sidecar of another chart's pods.

Add this chart as a dependency (values under `shardbridge:`, with `standalone: false` so it
renders nothing of its own) and, in your templates, with one argument for all of them:

  {{- $sb := dict "root" . "values" .Values.shardbridge }}

  # pod template annotations: roll the pods when connectors.toml changes
  checksum/shardbridge: {{ include "shardbridge.sidecar.checksum" $sb }}
  # pod spec
  terminationGracePeriodSeconds: {{ include "shardbridge.sidecar.terminationGracePeriodSeconds" $sb }}
  containers:
    - name: app
      ...
    {{- include "shardbridge.sidecar" $sb | nindent 4 }}
  volumes:
    {{- include "shardbridge.sidecar.volumes" $sb | nindent 4 }}

  # a template file of its own: the ConfigMap with connectors.toml
  {{- include "shardbridge.sidecar.configMap" (dict "root" . "values" .Values.shardbridge) }}

Keys of the argument:
  root        the including chart's context (.)                              required
  values      shardbridge's values (.Values.shardbridge)                      required
  name        container name                                  default "shardbridge"
  portName    metrics port name (unique in the pod)           default "sb-metrics"
  configMap   ConfigMap name                                  default "<release>-shardbridge-sidecar"
  appVersion  image tag when values.image.tag is empty        default: this chart's appVersion
  readiness   add the /readyz readiness probe                 default false: a sidecar's
              readiness is its pod's, and a degraded connector (503) would take the
              application out of its Services; /healthz liveness and startup probes stay
The container runs as the non-root user of values.securityContext whatever the pod's own
securityContext; its pod needs a terminationGracePeriodSeconds of at least
shardbridge.sidecar.terminationGracePeriodSeconds for leases to be handed off on a stop.
*/}}

{{- define "shardbridge.sidecar.configMapName" -}}
{{- default (printf "%s-shardbridge-sidecar" .root.Release.Name) .configMap | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "shardbridge.sidecar.appVersion" -}}
{{- if .appVersion -}}
{{- .appVersion -}}
{{- else -}}
{{- /* .Subcharts.shardbridge.Chart: this chart's metadata when it is a dependency. */ -}}
{{- $chart := dig "shardbridge" "Chart" nil (default dict .root.Subcharts) -}}
{{- if $chart -}}{{ $chart.AppVersion }}{{- else -}}{{ .root.Chart.AppVersion }}{{- end -}}
{{- end -}}
{{- end }}

{{- define "shardbridge.sidecar" -}}
{{- if not .values -}}
{{- fail "shardbridge.sidecar: the argument needs \"values\" (shardbridge's values, e.g. .Values.shardbridge)" -}}
{{- end -}}
{{- $name := default "shardbridge" .name -}}
{{- include "shardbridge.container" (dict "values" .values "appVersion" (include "shardbridge.sidecar.appVersion" .) "name" $name "portName" (default "sb-metrics" .portName) "configVolume" (printf "%s-config" $name) "tmpVolume" (printf "%s-tmp" $name) "readiness" (default false .readiness)) -}}
{{- end }}

{{- define "shardbridge.sidecar.volumes" -}}
{{- $name := default "shardbridge" .name -}}
- name: {{ $name }}-config
  configMap:
    name: {{ include "shardbridge.sidecar.configMapName" . }}
- name: {{ $name }}-tmp
  emptyDir: {}
{{- with .values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "shardbridge.sidecar.checksum" -}}
{{- include "shardbridge.configChecksum" .values -}}
{{- end }}

{{- define "shardbridge.sidecar.terminationGracePeriodSeconds" -}}
{{- include "shardbridge.terminationGracePeriodSeconds" .values -}}
{{- end }}

{{- define "shardbridge.sidecar.configMap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "shardbridge.sidecar.configMapName" . }}
  labels:
    app.kubernetes.io/name: shardbridge
    app.kubernetes.io/instance: {{ .root.Release.Name }}
    app.kubernetes.io/managed-by: {{ .root.Release.Service }}
    app.kubernetes.io/component: sidecar-config
data:
  connectors.toml: |
    {{- include "shardbridge.connectorsToml" .values | nindent 4 }}
{{- end }}
