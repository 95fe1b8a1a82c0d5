"""tagger: the ML core of tagwatch (text cleaning, features, pipelines, training, metrics)."""
