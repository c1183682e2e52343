"""Cost simulation: scenario, trace, simulated fleet, policies, DES engine, LP bound."""
