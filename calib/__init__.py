"""calib: offline fitting of what the runtime needs (codec statistics, Kalman noise, bounds)."""
