"""The science: losses, penalties, models, data sets and optimisers. Imports torch, never the trainer."""
