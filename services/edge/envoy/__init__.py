"""Envoy as the edge: its bootstrap (only an ADS cluster pointing at placement) and launcher."""
