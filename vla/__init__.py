"""vla: reference verifier and drafter models (PyTorch) and their training. Host only."""
