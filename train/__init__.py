"""Training side: labelled data, fine-tuning a classifier (torch, imported lazily) and probing
frozen features served over gRPC (client + scikit-learn, no torch)."""
