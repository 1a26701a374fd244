"""Keys, passwords, roles (the rest of isolation comes with the isolation issue)."""
