"""The drift job: stored prediction features against the model's baseline, judged with popmon."""
