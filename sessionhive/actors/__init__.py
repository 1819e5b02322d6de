"""Who owns state: the SupervisorActor (the session directory), one SessionActor per session, and the turns they run."""
