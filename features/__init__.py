"""Entity keys -> feature vectors: Feast feature repos and the batched online reader."""
