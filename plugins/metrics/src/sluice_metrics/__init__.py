"""Metrics exporters for Sluice: ``prometheus`` (Pushgateway, ``/metrics``, node_exporter textfile)
and ``statsd`` (UDP, optional DogStatsD tags). Core builds the samples; these only send them."""

__version__ = "0.1.0"
