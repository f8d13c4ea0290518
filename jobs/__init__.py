"""latentscape's jobs: one CLI sub-command each, over a pure numeric core (latentscape.jobs.core)."""
