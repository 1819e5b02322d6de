"""Who owns state: the SupervisorActor, SessionActors, the turn loop, and the actor backends."""
