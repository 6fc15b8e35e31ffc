"""Runtime: bring the planned stack up on Docker, health-gate it and keep it converged."""
