"""`python -m erasekit.shapeworld.classifier`: train the classifier (see `classifier.train`)."""
from .train import main

main()
