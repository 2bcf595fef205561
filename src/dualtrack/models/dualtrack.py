"""DualTrack and its ablations (registered models)."""
