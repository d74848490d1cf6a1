"""arq workers for sessionstore: expiry sweeps, repair, reconnects (see workers.settings)."""
