"""Sample quality: Inception features and scores (torch-fidelity), the metric registry, 2-D mode metrics."""
