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

{{/* Arguments of `shoal configure` besides the mirror target (from the env), as a YAML list. */}}
{{- define "shoal.configureArgs" -}}
{{- $args := list "configure" (printf "--containerd-config-path=%s" .Values.containerd.configPath) -}}
{{- with .Values.mirroredRegistries }}
{{- $args = append $args (printf "--mirrored-registries=%s" (join "," .)) -}}
{{- end }}
{{- if .Values.containerd.keepExistingHosts }}
{{- $args = append $args "--prepend-existing" -}}
{{- end }}
{{- $args = concat $args (list
  (printf "--log-format=%s" .Values.config.logFormat)
  (printf "--log-level=%s" .Values.config.logLevel)) -}}
{{- toYaml $args -}}
{{- end -}}

{{/* Where the data directory is mounted in the pod. */}}
{{- define "shoal.dataDir" -}}
/var/lib/shoal
{{- end -}}

{{/*
Arguments of `shoal run`, as a YAML list. Every flag is passed explicitly so
that `kubectl describe` shows the whole configuration; extraArgs may only add
flags that are not in this list (the DaemonSet template checks). Built as a
list and rendered with toYaml, so that any value is quoted correctly.
*/}}
{{- define "shoal.runArgs" -}}
{{- $host := include "shoal.nodeHost" . -}}
{{- $c := .Values.config -}}
{{- $args := list "run"
  (printf "--registry-addr=%s:%d" $host (int .Values.ports.registry))
  (printf "--router-addr=%s:%d" $host (int .Values.ports.router))
  (printf "--metrics-addr=%s:%d" $host (int .Values.ports.metrics))
  (printf "--containerd-sock=%s" .Values.containerd.socket)
  (printf "--containerd-namespace=%s" .Values.containerd.namespace) -}}
{{- with .Values.containerd.contentPath }}
{{- $args = append $args (printf "--containerd-content-path=%s" .) -}}
{{- end }}
{{- $args = append $args (printf "--data-dir=%s" (include "shoal.dataDir" .)) -}}
{{- if .Values.bootstrap.dns }}
{{- $args = append $args (printf "--bootstrap-dns=%s" (include "shoal.bootstrapDns" .)) -}}
{{- end }}
{{- with .Values.bootstrap.peers }}
{{- $args = append $args (printf "--bootstrap-peers=%s" (join "," .)) -}}
{{- end }}
{{- with .Values.mirroredRegistries }}
{{- $args = append $args (printf "--mirrored-registries=%s" (join "," .)) -}}
{{- end }}
{{- with .Values.privateRegistries }}
{{- $args = append $args (printf "--private-registries=%s" (join "," .)) -}}
{{- end }}
{{- $args = concat $args (list
  (printf "--resolve-timeout=%s" $c.resolveTimeout)
  (printf "--peer-connect-timeout=%s" $c.peerConnectTimeout)
  (printf "--peer-header-timeout=%s" $c.peerHeaderTimeout)
  (printf "--peer-stall-timeout=%s" $c.peerStallTimeout)
  (printf "--max-peer-attempts=%d" (int $c.maxPeerAttempts))
  (printf "--provider-ttl=%s" $c.providerTtl)
  (printf "--readvertise-interval=%s" $c.readvertiseInterval)
  (printf "--p2p-ping-interval=%s" $c.p2pPingInterval)
  (printf "--p2p-idle-timeout=%s" $c.p2pIdleTimeout)) -}}
{{- with $c.advertiseConcurrency }}
{{- $args = append $args (printf "--advertise-concurrency=%d" (int .)) -}}
{{- end }}
{{- $args = concat $args (list
  (printf "--drain-timeout=%s" $c.drainTimeout)
  (printf "--log-format=%s" $c.logFormat)
  (printf "--log-level=%s" $c.logLevel)) -}}
{{- toYaml $args -}}
{{- end -}}

{{/* The Secret holding the pre-shared key: the user's, or the one the chart creates. */}}
{{- define "shoal.pskSecretName" -}}
{{- .Values.psk.existingSecret | default (printf "%s-psk" (include "shoal.fullname" .)) -}}
{{- end -}}

{{/* Where the pre-shared key's Secret is mounted in the shoal container. */}}
{{- define "shoal.pskDir" -}}
/etc/shoal/psk
{{- end -}}
