{{/*
connectors.toml from shardbridge's values (.worker, .aws, .connectors).

shardbridge.connectorsToml: argument: shardbridge's values (.Values in this chart,
.Values.shardbridge in a chart that depends on it).
*/}}
{{- define "shardbridge.connectorsToml" -}}
# connectors.toml rendered by the shardbridge Helm chart (values: worker, aws, connectors).
# worker.id is not set here: SHARDBRIDGE__WORKER__ID is the pod's name.

[worker]
listen = {{ printf "%s:%d" .worker.bindAddress (int .worker.port) | toJson }}
shutdown_timeout_ms = {{ int64 .worker.shutdownTimeoutMs }}
{{- with .aws }}

[aws]
{{- include "shardbridge.toml.table" (dict "table" . "path" (list "aws")) }}
{{- end }}
{{- range $c := .connectors }}

[[connectors]]
{{- include "shardbridge.toml.table" (dict "table" $c "path" (list "connectors")) }}
{{- end }}
{{ end }}

{{/*
shardbridge.toml.table: the keys of a map: first its values (key = value), then its sub-maps as
sub-tables ([path.key]). Argument: dict "table" MAP "path" LIST (the table's header keys).
Null values are left out. "name" and "type" come first, the other keys in alphabetical order.
*/}}
{{- define "shardbridge.toml.table" -}}
{{- $t := .table -}}
{{- $path := .path -}}
{{- $keys := include "shardbridge.toml.orderedKeys" $t | fromJsonArray -}}
{{- range $k := $keys }}
{{- $v := index $t $k }}
{{- if not (or (kindIs "invalid" $v) (kindIs "map" $v)) }}
{{ include "shardbridge.toml.key" $k }} = {{ include "shardbridge.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $k := $keys }}
{{- $v := index $t $k }}
{{- if kindIs "map" $v }}
{{- $sub := append $path (include "shardbridge.toml.key" $k) }}

[{{ join "." $sub }}]
{{- include "shardbridge.toml.table" (dict "table" $v "path" $sub) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "shardbridge.toml.orderedKeys" -}}
{{- $m := . -}}
{{- $first := list "name" "type" "source" "leases" "format" "sink" -}}
{{- $out := list -}}
{{- range $k := $first }}{{ if hasKey $m $k }}{{ $out = append $out $k }}{{ end }}{{ end -}}
{{- range $k := keys $m | sortAlpha }}{{ if not (has $k $first) }}{{ $out = append $out $k }}{{ end }}{{ end -}}
{{- toJson $out -}}
{{- end }}

{{/* A key: bare when it can be, else a quoted string ("compression.type"). */}}
{{- define "shardbridge.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end -}}
{{- end }}

{{/*
A value: strings as TOML basic strings (JSON's escapes are TOML's), integers as integers
(YAML numbers arrive as floats: a whole number is written as an integer), lists as arrays, maps
inside lists as inline tables.
*/}}
{{- define "shardbridge.toml.value" -}}
{{- $v := . -}}
{{- if kindIs "string" $v }}{{ toJson $v }}
{{- else if kindIs "bool" $v }}{{ ternary "true" "false" $v }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) (kindIs "uint32" $v) (kindIs "uint" $v) }}{{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) }}
{{- if eq (float64 (int64 $v)) (float64 $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if kindIs "slice" $v }}[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "shardbridge.toml.value" $e }}{{ end }}]
{{- else if kindIs "map" $v }}
{{- $items := list }}
{{- range $k := keys $v | sortAlpha }}
{{- if not (kindIs "invalid" (index $v $k)) }}
{{- $items = append $items (printf "%s = %s" (include "shardbridge.toml.key" $k) (include "shardbridge.toml.value" (index $v $k))) }}
{{- end }}
{{- end }}
{{- printf "{ %s }" (join ", " $items) }}
{{- else }}{{ fail (printf "shardbridge: cannot write %v (%s) as TOML" $v (kindOf $v)) }}
{{- end }}
{{- end }}
