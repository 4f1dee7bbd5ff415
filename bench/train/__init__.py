"""train: the engine, the method plugin API, augmentation and per-exit gradient statistics."""
