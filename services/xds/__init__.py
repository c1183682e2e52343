"""Placement as the xDS control plane of Envoy edges: route tables compiled to Envoy
resources and served over ADS."""
