{{/* Names and labels only: no configuration logic lives in templates. */}}

{{- define "switchyard.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "switchyard.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "switchyard.selector" -}}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "switchyard.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Volumes every Switchyard pod mounts: the mesh file, a writable run dir, /tmp, Consul credentials. */}}
{{- define "switchyard.volumes" -}}
- name: config
  configMap:
    name: {{ include "switchyard.fullname" . }}-config
- name: run
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- if or .Values.consul.token .Values.consul.tokenSecret.name }}
- name: consul-token
  secret:
    secretName: {{ include "switchyard.consulTokenSecret" . }}
    items:
      - key: {{ .Values.consul.tokenSecret.key }}
        path: token
{{- end }}
{{- with .Values.consul.tlsSecret.name }}
- name: consul-tls
  secret:
    secretName: {{ . }}
{{- end }}
{{- end -}}

{{- define "switchyard.volumeMounts" -}}
- name: config
  mountPath: /etc/switchyard
  readOnly: true
- name: run
  mountPath: {{ .Values.mesh.run_dir }}
- name: tmp
  mountPath: /tmp
{{- if or .Values.consul.token .Values.consul.tokenSecret.name }}
- name: consul-token
  mountPath: /etc/switchyard-consul/acl
  readOnly: true
{{- end }}
{{- if .Values.consul.tlsSecret.name }}
- name: consul-tls
  mountPath: /etc/switchyard-consul/tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "switchyard.consulTokenSecret" -}}
{{- .Values.consul.tokenSecret.name | default (printf "%s-consul-token" (include "switchyard.fullname" .)) -}}
{{- end -}}

{{- define "switchyard.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "switchyard.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}
