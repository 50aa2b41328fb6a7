"""What uses a finished run: evaluate, predict, export, report."""
