"""The training methods: CoMatch and its baselines, their losses and their state."""
