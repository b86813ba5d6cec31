{{/* "bernini" -> bernini-operator, "bernini-operator-prod" -> itself, "prod" -> prod-bernini-operator */}}
{{- define "bernini.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else if hasPrefix .Release.Name .Chart.Name -}}{{ .Chart.Name }}
{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "bernini.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "bernini.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bernini.serviceAccountName" -}}
{{- default (include "bernini.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The operator's permissions; the same rules back a ClusterRole or one Role per watched namespace. */}}
{{- define "bernini.rules" -}}
- apiGroups: [bernini.dev]
  resources: [berninideployments]
  verbs: [get, list, watch]
- apiGroups: [bernini.dev]
  resources: [berninideployments/status]
  verbs: [get, patch]
# blockOwnerDeletion on the RayService's ownerReference needs update on the owner's finalizers.
- apiGroups: [bernini.dev]
  resources: [berninideployments/finalizers]
  verbs: [update]
- apiGroups: [ray.io]
  resources: [rayservices]
  verbs: [get, list, watch, create, patch]
# An upgrade given back at its deadline: its new cluster is cleared from KubeRay's pendingServiceStatus (a JSON
# patch guarded by that cluster's name), so KubeRay deletes it instead of making yet another.
- apiGroups: [ray.io]
  resources: [rayservices/status]
  verbs: [patch]
# Watched for the worker pods each group keeps (status.cost); read for the model version the active cluster
# runs while a new one rolls out; patched for its worker groups' min/max, which KubeRay never carries from the
# RayService to a running cluster.
- apiGroups: [ray.io]
  resources: [rayclusters]
  verbs: [get, list, watch, patch]
# The Gateway KubeRay makes for an incremental upgrade: its address is the deployment's endpoint.
- apiGroups: [gateway.networking.k8s.io]
  resources: [gateways]
  verbs: [get]
# The pre-warm DaemonSet (spec.artifactsCache.prewarm), applied while a version rolls out, deleted after; read
# first, so a tenant's DaemonSet of that name is never applied over nor deleted.
- apiGroups: [apps]
  resources: [daemonsets]
  verbs: [get, create, patch, delete]
# Why a starting RayCluster's pods fail (an init container's exit code), listed only while one starts.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
