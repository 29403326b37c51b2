"""Training, evaluation, testing and the process launcher."""
