"""latentscape: what a neural network has learned, layer by layer, tracked in MLflow."""
