{{/* Chart name, overridable. */}}
{{- define "imagejob-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release name, plus the chart name unless already in it. */}}
{{- define "imagejob-operator.fullname" -}}
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

{{- define "imagejob-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "imagejob-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imagejob-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "imagejob-operator.labels" -}}
helm.sh/chart: {{ include "imagejob-operator.chart" . }}
{{ include "imagejob-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: imagejob-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "imagejob-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "imagejob-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "imagejob-operator.leaseName" -}}
{{- default (include "imagejob-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "imagejob-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The `helm test` Pod: the release's labels but not its selector labels,
     so neither the Service nor the PodDisruptionBudget selects it. */}}
{{- define "imagejob-operator.testLabels" -}}
helm.sh/chart: {{ include "imagejob-operator.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: test
app.kubernetes.io/part-of: imagejob-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
