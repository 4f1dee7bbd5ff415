"""evaluate: exit policies and their accuracy / expected-FLOPs on cached per-exit logits."""
