"""Training: the on-device session, schedules, checkpoints and the loop."""
