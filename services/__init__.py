"""linkflow's services, one package each, each run as its own process."""
