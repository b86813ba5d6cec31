"""The ground floor: facts about the product that every other package builds on (the instance catalogue, the
pipeline's stages, Kubernetes quantities, how replicas pack onto nodes). It imports nothing else of bernini."""
