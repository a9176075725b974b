"""`lossbench report`: collect runs from the store, statistics across seeds, figures, HTML and Markdown."""
