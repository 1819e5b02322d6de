"""Who owns state: the supervisor (the session directory), one actor per session, and their turns."""
