{{/* Names, labels and the few values derived in more than one template. */}}

{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shoal.fullname" -}}
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

{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shoal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "shoal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shoal.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "shoal.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The node IP as it appears in a socket address or URL authority: the
NODE_IP environment variable (status.hostIP), in brackets for IPv6.
Kubernetes expands $(NODE_IP) in args.
*/}}
{{- define "shoal.nodeHost" -}}
{{- if eq .Values.network.nodeIPFamily "IPv6" -}}
[$(NODE_IP)]
{{- else -}}
$(NODE_IP)
{{- end -}}
{{- end -}}

{{/* The URL containerd uses to reach this node's Shoal. */}}
{{- define "shoal.mirrorTarget" -}}
{{- printf "http://%s:%d" (include "shoal.nodeHost" .) (int .Values.ports.registry) -}}
{{- end -}}

{{/* The headless Service's absolute DNS name, for --bootstrap-dns. */}}
{{- define "shoal.bootstrapDns" -}}
{{- printf "%s.%s.svc.%s." (include "shoal.fullname" .) .Release.Namespace .Values.network.clusterDomain -}}
{{- end -}}

{{/* The host directory holding containerd's socket, mounted read-only. */}}
{{- define "shoal.socketDir" -}}
{{- dir .Values.containerd.socket -}}
{{- end -}}

{{/*
The environment of both containers: the node IP from the downward API, and
the mirror URL built from it (Kubernetes expands $(NODE_IP) in env values, but
not in lifecycle hook commands, so `configure` reads the URL from the env).
*/}}
{{- define "shoal.env" -}}
- name: NODE_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
- name: SHOAL_MIRROR_TARGETS
  value: {{ include "shoal.mirrorTarget" . | quote }}
{{- end -}}

{{/* Arguments of `shoal configure` besides the mirror target (from the env). */}}
{{- define "shoal.configureArgs" -}}
- configure
- --containerd-config-path={{ .Values.containerd.configPath }}
{{- with .Values.mirroredRegistries }}
- --mirrored-registries={{ join "," . }}
{{- end }}
{{- if .Values.containerd.keepExistingHosts }}
- --prepend-existing
{{- end }}
- --log-format={{ .Values.config.logFormat }}
- --log-level={{ .Values.config.logLevel }}
{{- end -}}
