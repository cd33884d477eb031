"""Operations with the real tools: hadolint, kustomize and kubernetes-validate on the manifests, promtool and a
live Prometheus on the metrics, dashboard, alerts and autoscaler queries."""
