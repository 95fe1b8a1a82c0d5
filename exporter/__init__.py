"""exporter: the tagwatch predictor service (Flask) and its Prometheus metrics."""
