"""tune: exit-policy parameters chosen on validation logits for target compute budgets, applied to test."""
