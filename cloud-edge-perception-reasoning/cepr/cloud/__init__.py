"""Cloud reasoning: the interface every cloud backend implements, payloads, answer parsing."""
