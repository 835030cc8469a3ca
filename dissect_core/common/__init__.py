"""What every layer shares: errors a user can fix, atomic file writes, progress callbacks,
and the registry of named choices. Imports nothing else of dissect_core, and no torch."""
