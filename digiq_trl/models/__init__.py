"""Models: critic heads, VLM feature extraction and the VLM policy wrapper."""
