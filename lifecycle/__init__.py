"""Model lifecycle: MLflow registry, retraining from feedback, champion/challenger gate."""
