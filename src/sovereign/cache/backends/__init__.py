"""Cache storage backends: ``sqlite`` (embedded, default) and ``redis`` (shared by gateway processes)."""
