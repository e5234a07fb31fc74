"""The browser's screens: runs overview, one run (programs, grid, chart), one program,
and the key-binding help."""
