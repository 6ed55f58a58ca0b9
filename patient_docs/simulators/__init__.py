"""In-process simulators of DocumentExchange and TaskTracker, for tests and the local demo."""
